// CPU or CUDA kernel for each wired op family, chosen by the device of the tensors (see kernel_calls.h).
#include "autograd/kernel_calls.h"

#include <exception>

#include "autograd/dispatch.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/reduce.h"

#ifdef VLP_HAVE_CUDA
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/nn.h"
#include "kernels/cuda/runtime.h"
#endif

namespace vlp {

namespace {

#ifdef VLP_HAVE_CUDA
cuda::EwDType cuda_dtype(const char* op, DType dt) {
  if (dt == DType::F32) return cuda::EwDType::F32;
  if (dt == DType::BF16) return cuda::EwDType::BF16;
  VLP_FAIL(op, ": CUDA kernels compute in F32 or BF16, got ", dt);
}

// Runs fn(stream) with the tensor's GPU current; CUDA errors become vlp::Error naming the op.
template <class Fn>
void on_gpu(const char* op, Device device, Fn&& fn) {
  try {
    int previous = cuda::current_device();
    cuda::set_device(device.index);
    fn(cuda::current_stream(device.index));
    cuda::set_device(previous);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    VLP_FAIL(op, " on ", device, ": ", e.what());
  }
}
#else
template <class Fn>
void on_gpu(const char* op, Device device, Fn&&) {
  VLP_FAIL(op, ": no kernel for ", device, " (this vlpeft was built without the CUDA backend)");
}
#endif

}  // namespace

void call_unary_forward(const char* op, cpu::Unary kind, const Tensor& x, const Tensor& y, double a, double b) {
  if (x.is_cpu()) {
    dispatch_float(op, x.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::unary_forward<T>(kind, x.data<T>(), y.data<T>(), x.numel(), a, b);
    });
    return;
  }
  on_gpu(op, x.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::unary_forward(cuda_dtype(op, x.dtype()), kind, x.data_ptr(), y.data_ptr(), x.numel(), a, b, stream);
#endif
  });
}

void call_unary_backward(const char* op, cpu::Unary kind, const Tensor& x, const Tensor& y, const Tensor& dy,
                         const Tensor& dx, double a, double b) {
  if (dy.is_cpu()) {
    dispatch_float(op, dy.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::unary_backward<T>(kind, x.defined() ? x.data<T>() : nullptr, y.defined() ? y.data<T>() : nullptr,
                             dy.data<T>(), dx.data<T>(), dy.numel(), a, b);
    });
    return;
  }
  on_gpu(op, dy.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::unary_backward(cuda_dtype(op, dy.dtype()), kind, x.defined() ? x.data_ptr() : nullptr,
                         y.defined() ? y.data_ptr() : nullptr, dy.data_ptr(), dx.data_ptr(), dy.numel(), a, b,
                         stream);
#endif
  });
}

void call_binary(const char* op, cpu::Binary kind, const Shape& shape, const Tensor& out, const Tensor& a,
                 const Shape& a_strides, const Tensor& b, const Shape& b_strides, double alpha) {
  if (out.is_cpu()) {
    dispatch_float(op, out.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::binary<T>(kind, shape, out.data<T>(), out.strides().data(), a.data<T>(), a_strides.data(), b.data<T>(),
                     b_strides.data(), alpha);
    });
    return;
  }
  on_gpu(op, out.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::binary(cuda_dtype(op, out.dtype()), kind, shape, out.data_ptr(), out.strides().data(), a.data_ptr(),
                 a_strides.data(), b.data_ptr(), b_strides.data(), alpha, stream);
#endif
  });
}

void call_sum_dim(const char* op, const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner) {
  if (x.is_cpu()) {
    dispatch_float(op, x.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::sum_dim<T>(x.data<T>(), y.data<T>(), outer, n, inner);
    });
    return;
  }
  on_gpu(op, x.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::sum_dim(cuda_dtype(op, x.dtype()), x.data_ptr(), y.data_ptr(), outer, n, inner, stream);
#endif
  });
}

void call_gemm(const char* op, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
               const Tensor& a, int64_t a_offset, int64_t lda, const Tensor& b, int64_t b_offset, int64_t ldb,
               double beta, const Tensor& c, int64_t c_offset, int64_t ldc) {
  if (c.is_cpu()) {
    dispatch_float(op, c.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::gemm<T>(trans_a, trans_b, m, n, k, alpha, a.data<T>() + a_offset, lda, b.data<T>() + b_offset, ldb, beta,
                   c.data<T>() + c_offset, ldc);
    });
    return;
  }
  on_gpu(op, c.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    if (m == 0 || n == 0) return;
    const cuda::GemmDType dt = cuda_dtype(op, c.dtype()) == cuda::EwDType::F32 ? cuda::GemmDType::F32
                                                                               : cuda::GemmDType::BF16;
    const int64_t es = int64_t(c.element_size());
    char* c_ptr = static_cast<char*>(c.data_ptr()) + c_offset * es;
    if (k == 0) {  // op(A) op(B) is all zeros: C = beta C
      if (beta == 0.0) {
        for (int64_t i = 0; i < m; ++i)
          cuda::check(cudaMemsetAsync(c_ptr + i * ldc * es, 0, size_t(n * es), stream), "gemm k = 0");
      } else if (beta != 1.0) {
        VLP_FAIL(op, ": a CUDA GEMM with k = 0 and beta other than 0 or 1");
      }
      return;
    }
    cuda::GemmArgs g;
    g.trans_a = trans_a, g.trans_b = trans_b, g.m = m, g.n = n, g.k = k;
    g.ab_dtype = g.c_dtype = dt;
    g.a = static_cast<const char*>(a.data_ptr()) + a_offset * es, g.lda = lda;
    g.b = static_cast<const char*>(b.data_ptr()) + b_offset * es, g.ldb = ldb;
    g.c = c_ptr, g.ldc = ldc;
    g.alpha = float(alpha), g.beta = float(beta);
    cuda::gemm(g);
#endif
  });
}

}  // namespace vlp
