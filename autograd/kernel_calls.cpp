// CPU or CUDA kernel for each wired op family, chosen by the device of the tensors (see kernel_calls.h).
#include "autograd/kernel_calls.h"

#include <algorithm>
#include <exception>

#include "autograd/dispatch.h"
#include "runtime/trace.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/index.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/random.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/softmax.h"
#include "kernels/cpu/vision.h"

#ifdef VLP_HAVE_CUDA
#include "kernels/cuda/attention.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/index.h"
#include "kernels/cuda/lora.h"
#include "kernels/cuda/misc.h"
#include "kernels/cuda/nn.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/vision.h"
#endif

namespace vlp {

namespace {

template <class T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
[[maybe_unused]] void* void_or_null(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

#ifdef VLP_HAVE_CUDA
cuda::EwDType cuda_dtype(const char* op, DType dt) {
  if (dt == DType::F32) return cuda::EwDType::F32;
  if (dt == DType::BF16) return cuda::EwDType::BF16;
  VLP_FAIL(op, ": CUDA kernels compute in F32 or BF16, got ", dt);
}

// Runs fn(stream) with the tensor's GPU current; CUDA errors become vlp::Error naming the op. Every op's
// device work passes here, forward and backward, so this one NVTX range names it on the timeline (inside a
// layer's range, and inside the op-backward range the engine opens).
template <class Fn>
void on_gpu(const char* op, Device device, Fn&& fn) {
  TraceRange range(op);
  try {
    struct Restore {  // the previous device again, also when fn throws
      int device;
      ~Restore() { cudaSetDevice(device); }
    } restore{cuda::current_device()};
    cuda::set_device(device.index);
    fn(cuda::current_stream(device.index));
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
    auto gemm_dtype = [op](DType dt) {
      return cuda_dtype(op, dt) == cuda::EwDType::F32 ? cuda::GemmDType::F32 : cuda::GemmDType::BF16;
    };
    VLP_CHECK(a.dtype() == b.dtype() && (a.dtype() == c.dtype() || c.dtype() == DType::F32), op,
              ": a CUDA GEMM needs A and B of one dtype and C of that dtype or F32, got ", a.dtype(), ", ",
              b.dtype(), " and ", c.dtype());
    const int64_t es = int64_t(c.element_size()), ab_es = int64_t(a.element_size());
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
    g.ab_dtype = gemm_dtype(a.dtype()), g.c_dtype = gemm_dtype(c.dtype());
    g.a = static_cast<const char*>(a.data_ptr()) + a_offset * ab_es, g.lda = lda;
    g.b = static_cast<const char*>(b.data_ptr()) + b_offset * ab_es, g.ldb = ldb;
    g.c = c_ptr, g.ldc = ldc;
    g.alpha = float(alpha), g.beta = float(beta);
    cuda::gemm(g);
#endif
  });
}

void call_softmax_forward(const char* op, const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner,
                          bool log) {
  if (x.is_cpu()) {
    dispatch_float(op, x.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::softmax_forward<T>(x.data<T>(), y.data<T>(), outer, n, inner, log);
    });
    return;
  }
  on_gpu(op, x.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::softmax_forward(cuda_dtype(op, x.dtype()), x.data_ptr(), y.data_ptr(), outer, n, inner, log, stream);
#endif
  });
}

void call_softmax_backward(const char* op, const Tensor& y, const Tensor& dy, const Tensor& dx, int64_t outer,
                           int64_t n, int64_t inner, bool log) {
  if (y.is_cpu()) {
    dispatch_float(op, y.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::softmax_backward<T>(y.data<T>(), dy.data<T>(), dx.data<T>(), outer, n, inner, log);
    });
    return;
  }
  on_gpu(op, y.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::softmax_backward(cuda_dtype(op, y.dtype()), y.data_ptr(), dy.data_ptr(), dx.data_ptr(), outer, n, inner, log,
                           stream);
#endif
  });
}

void call_layer_norm_forward(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& y, const Tensor& mean, const Tensor& rstd, int64_t rows, int64_t d,
                             double eps) {
  if (x.is_cpu()) {
    dispatch_float(op, x.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::layer_norm_forward<T>(x.data<T>(), ptr_or_null<T>(gamma), ptr_or_null<T>(beta), y.data<T>(),
                                 mean.data<double>(), rstd.data<double>(), rows, d, eps);
    });
    return;
  }
  on_gpu(op, x.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::layer_norm_forward(cuda_dtype(op, x.dtype()), x.data_ptr(), nullptr, void_or_null(gamma),
                             void_or_null(beta), y.data_ptr(), nullptr, mean.data<float>(), rstd.data<float>(), rows,
                             d, eps, stream);
#endif
  });
}

void call_layer_norm_backward(const char* op, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                              const Tensor& gamma, const Tensor& dy, const Tensor& dx, const Tensor& dgamma,
                              const Tensor& dbeta, int64_t rows, int64_t d) {
  if (dy.is_cpu()) {
    dispatch_float(op, dy.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::layer_norm_backward<T>(ptr_or_null<T>(x), ptr_or_null<double>(mean), ptr_or_null<double>(rstd),
                                  ptr_or_null<T>(gamma), dy.data<T>(), ptr_or_null<T>(dx), ptr_or_null<T>(dgamma),
                                  ptr_or_null<T>(dbeta), rows, d);
    });
    return;
  }
  on_gpu(op, dy.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::layer_norm_backward(cuda_dtype(op, dy.dtype()), void_or_null(x), ptr_or_null<float>(mean),
                              ptr_or_null<float>(rstd), void_or_null(gamma), dy.data_ptr(), void_or_null(dx),
                              void_or_null(dgamma), void_or_null(dbeta), rows, d, stream);
#endif
  });
}

void call_rms_norm_forward(const char* op, const Tensor& x, const Tensor& weight, const Tensor& y, const Tensor& rstd,
                           int64_t rows, int64_t d, double eps) {
  if (x.is_cpu()) {
    dispatch_float(op, x.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::rms_norm_forward<T>(x.data<T>(), ptr_or_null<T>(weight), y.data<T>(), rstd.data<double>(), rows, d, eps);
    });
    return;
  }
  on_gpu(op, x.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::rms_norm_forward(cuda_dtype(op, x.dtype()), x.data_ptr(), void_or_null(weight), y.data_ptr(),
                           rstd.data<float>(), rows, d, eps, stream);
#endif
  });
}

void call_rms_norm_backward(const char* op, const Tensor& x, const Tensor& rstd, const Tensor& weight,
                            const Tensor& dy, const Tensor& dx, const Tensor& dweight, int64_t rows, int64_t d) {
  if (dy.is_cpu()) {
    dispatch_float(op, dy.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::rms_norm_backward<T>(x.data<T>(), rstd.data<double>(), ptr_or_null<T>(weight), dy.data<T>(),
                                ptr_or_null<T>(dx), ptr_or_null<T>(dweight), rows, d);
    });
    return;
  }
  on_gpu(op, dy.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::rms_norm_backward(cuda_dtype(op, dy.dtype()), x.data_ptr(), rstd.data<float>(), void_or_null(weight),
                            dy.data_ptr(), void_or_null(dx), void_or_null(dweight), rows, d, stream);
#endif
  });
}

void call_dropout(const char* op, const Tensor& x, const Tensor& y, double p, uint64_t seed, uint64_t offset) {
  if (x.is_cpu()) {
    dispatch_float(op, x.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::dropout<T>(x.data<T>(), y.data<T>(), y.numel(), p, seed, offset);
    });
    return;
  }
  on_gpu(op, x.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::dropout(cuda_dtype(op, x.dtype()), x.data_ptr(), y.data_ptr(), nullptr, y.numel(), p, seed, offset, stream);
#endif
  });
}

void call_embedding_forward(const char* op, const Tensor& weight, const Tensor& ids, const Tensor& out) {
  const int64_t row_bytes = weight.size(1) * int64_t(weight.element_size());
  if (weight.is_cpu()) {
    cpu::embedding_forward(weight.data_ptr(), row_bytes, ids.data<int64_t>(), ids.numel(), out.data_ptr());
    return;
  }
  Tensor ids_dev = convert(ids, DType::I64, weight.device());
  on_gpu(op, weight.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::embedding_forward(weight.data_ptr(), row_bytes, weight.size(0), ids_dev.data<int64_t>(), ids.numel(),
                            out.data_ptr(), stream);
#endif
  });
}

void call_embedding_backward(const char* op, const Tensor& dy, const Tensor& ids, const Tensor& dweight) {
  const int64_t vocab = dweight.size(0), d = dweight.size(1);
  if (dy.is_cpu()) {
    dispatch_float(op, dy.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::embedding_backward<T>(dy.data<T>(), ids.data<int64_t>(), ids.numel(), vocab, d, dweight.data<T>());
    });
    return;
  }
  Tensor ids_dev = convert(ids, DType::I64, dy.device());
  on_gpu(op, dy.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::embedding_backward(cuda_dtype(op, dy.dtype()), dy.data_ptr(), ids_dev.data<int64_t>(), ids.numel(), vocab,
                             d, dweight.data_ptr(), stream);
#endif
  });
}

void call_cross_entropy_forward(const char* op, const Tensor& logits, const Tensor& target, const Tensor& weight,
                                int64_t ignore_index, double eps, const Tensor& rows, const Tensor& lse,
                                const Tensor& raw) {
  const int64_t n = logits.size(0), c = logits.size(1);
  if (logits.is_cpu()) {
    dispatch_float(op, logits.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::cross_entropy_forward<T>(logits.data<T>(), target.data<int64_t>(), ptr_or_null<T>(weight), n, c,
                                    ignore_index, eps, rows.data<double>(), lse.data<double>(),
                                    ptr_or_null<double>(raw));
    });
    return;
  }
  Tensor target_dev = convert(target, DType::I64, logits.device());
  on_gpu(op, logits.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::cross_entropy_forward(cuda_dtype(op, logits.dtype()), logits.data_ptr(), target_dev.data<int64_t>(),
                                void_or_null(weight), n, c, ignore_index, eps, rows.data<float>(), lse.data<float>(),
                                ptr_or_null<float>(raw), stream);
#endif
  });
}

void call_cross_entropy_backward(const char* op, const Tensor& logits, const Tensor& target, const Tensor& weight,
                                 const Tensor& lse, const Tensor& raw, const Tensor& dloss, int64_t dloss_stride,
                                 double scale, int64_t c, int64_t ignore_index, double eps, const Tensor& dlogits,
                                 const Tensor& dweight) {
  const int64_t n = target.numel();
  if (dloss.is_cpu()) {
    dispatch_float(op, dloss.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::cross_entropy_backward<T>(ptr_or_null<T>(logits), target.data<int64_t>(), ptr_or_null<T>(weight),
                                     ptr_or_null<double>(lse), ptr_or_null<double>(raw), dloss.data<T>(),
                                     dloss_stride, scale, n, c, ignore_index, eps, ptr_or_null<T>(dlogits),
                                     ptr_or_null<T>(dweight));
    });
    return;
  }
  if (!dlogits.defined() && !dweight.defined()) return;
  [[maybe_unused]] const Tensor& typed = dlogits.defined() ? dlogits : dweight;  // the compute dtype
  Tensor target_dev = convert(target, DType::I64, dloss.device());
  Tensor dloss_f32 = convert(dloss, DType::F32);
  on_gpu(op, dloss.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::cross_entropy_backward(cuda_dtype(op, typed.dtype()), void_or_null(logits), target_dev.data<int64_t>(),
                                 void_or_null(weight), ptr_or_null<float>(lse), ptr_or_null<float>(raw),
                                 dloss_f32.data<float>(), dloss_stride, scale, n, c, ignore_index, eps,
                                 void_or_null(dlogits), void_or_null(dweight), stream);
#endif
  });
}

namespace {

template <class T>
cpu::AttentionArgs<T> cpu_attention_args(const AttentionConfig& c, const Tensor& q, const Tensor& k, const Tensor& v,
                                         const Tensor& bias, const Tensor& keep) {
  cpu::AttentionArgs<T> a;
  a.B = c.B, a.H = c.H, a.Tq = c.Tq, a.Tk = c.Tk, a.D = c.D, a.Dv = c.Dv;
  a.q = q.data<T>();
  a.k = k.data<T>();
  a.v = v.defined() ? v.data<T>() : nullptr;
  for (int d = 0; d < 3; ++d) {
    a.q_strides[d] = q.stride(d);
    a.k_strides[d] = k.stride(d);
    a.v_strides[d] = v.defined() ? v.stride(d) : 0;
  }
  if (bias.defined()) {
    a.bias = bias.data<T>();
    Shape s = broadcast_strides(bias, {c.B, c.H, c.Tq, c.Tk});
    for (int d = 0; d < 4; ++d) a.bias_strides[d] = s[size_t(d)];
  }
  a.key_keep = keep.defined() ? keep.data<bool>() : nullptr;
  a.causal = c.causal;
  a.scale = c.scale;
  a.dropout_p = c.dropout_p;
  a.seed = c.seed;
  a.offset = c.offset;
  return a;
}

#ifdef VLP_HAVE_CUDA
cuda::AttentionArgs cuda_attention_args(const char* op, const AttentionConfig& c, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const Tensor& bias, const Tensor& keep) {
  VLP_CHECK(v.defined(), op, ": the CUDA attention backward needs v");
  cuda::AttentionArgs a;
  a.dtype = cuda_dtype(op, q.dtype());
  a.B = c.B, a.H = c.H, a.Tq = c.Tq, a.Tk = c.Tk, a.D = c.D, a.Dv = c.Dv;
  a.q = q.data_ptr(), a.k = k.data_ptr(), a.v = v.data_ptr();
  for (int d = 0; d < 3; ++d) a.q_strides[d] = q.stride(d), a.k_strides[d] = k.stride(d), a.v_strides[d] = v.stride(d);
  if (bias.defined()) {
    a.bias = bias.data_ptr();
    Shape s = broadcast_strides(bias, {c.B, c.H, c.Tq, c.Tk});
    for (int d = 0; d < 4; ++d) a.bias_strides[d] = s[size_t(d)];
  }
  a.key_keep = keep.defined() ? keep.data<bool>() : nullptr;
  a.causal = c.causal;
  a.scale = c.scale;
  a.dropout_p = c.dropout_p;
  a.seed = c.seed;
  a.offset = c.offset;
  return a;
}
#endif

}  // namespace

void call_attention_forward(const char* op, const AttentionConfig& c, const Tensor& q, const Tensor& k,
                            const Tensor& v, const Tensor& bias, const Tensor& keep, const Tensor& out,
                            const Tensor& lse) {
  if (q.is_cpu()) {
    dispatch_float(op, q.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::attention_forward<T>(cpu_attention_args<T>(c, q, k, v, bias, keep), out.data<T>(), lse.data<T>());
    });
    return;
  }
  on_gpu(op, q.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::attention_forward(cuda_attention_args(op, c, q, k, v, bias, keep), out.data_ptr(), lse.data<float>(), stream);
#endif
  });
}

void call_attention_backward(const char* op, const AttentionConfig& c, const Tensor& q, const Tensor& k,
                             const Tensor& v, const Tensor& bias, const Tensor& keep, const Tensor& out,
                             const Tensor& lse, const Tensor& dout, const Tensor& dq, const Tensor& dk,
                             const Tensor& dv, const Tensor& dbias, const Shape& dbias_strides) {
  if (q.is_cpu()) {
    dispatch_float(op, q.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::attention_backward<T>(cpu_attention_args<T>(c, q, k, v, bias, keep), ptr_or_null<T>(out), lse.data<T>(),
                                 dout.data<T>(), ptr_or_null<T>(dq), ptr_or_null<T>(dk), ptr_or_null<T>(dv),
                                 ptr_or_null<T>(dbias), dbias_strides.empty() ? nullptr : dbias_strides.data());
    });
    return;
  }
  [[maybe_unused]] int64_t dB = 1, dH = 1;  // used by the CUDA branch
  if (dbias.defined()) {
    VLP_CHECK(dbias.dim() == 4 && dbias.size(2) == c.Tq && dbias.size(3) == c.Tk, op,
              ": on CUDA the bias gradient needs a bias of shape [1 or B, 1 or H, Tq, Tk], got ",
              shape_str(dbias.shape()));
    dB = dbias.size(0), dH = dbias.size(1);
  }
  VLP_CHECK(out.defined(), op, ": the CUDA attention backward needs the forward output");
  on_gpu(op, q.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::attention_backward(cuda_attention_args(op, c, q, k, v, bias, keep), out.data_ptr(), lse.data<float>(),
                             dout.data_ptr(), void_or_null(dq), void_or_null(dk), void_or_null(dv),
                             void_or_null(dbias), dB, dH, stream);
#endif
  });
}

void call_bce_with_logits_forward(const char* op, const Tensor& x, const Tensor& t, const Tensor& loss) {
  if (x.is_cpu()) {
    VLP_CHECK(loss.dtype() == x.dtype(), op, ": the CPU per-element loss has the logits' dtype");
    dispatch_float(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::bce_with_logits_forward<T>(x.data<T>(), t.data<T>(), loss.data<T>(), x.numel());
    });
    return;
  }
  VLP_CHECK(loss.dtype() == x.dtype() || loss.dtype() == DType::F32, op, ": the loss must be F32 or ", x.dtype());
  on_gpu(op, x.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::bce_with_logits_forward(cuda_dtype(op, x.dtype()), x.data_ptr(), t.data_ptr(), loss.data_ptr(),
                                  loss.dtype() == DType::F32, x.numel(), stream);
#endif
  });
}

void call_bce_with_logits_backward(const char* op, const Tensor& x, const Tensor& t, const Tensor& dloss,
                                   int64_t dloss_stride, double scale, const Tensor& dx, const Tensor& dtarget) {
  if (x.is_cpu()) {
    dispatch_float(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::bce_with_logits_backward<T>(x.data<T>(), ptr_or_null<T>(t), dloss.data<T>(), dloss_stride, scale,
                                       x.numel(), ptr_or_null<T>(dx), ptr_or_null<T>(dtarget));
    });
    return;
  }
  on_gpu(op, x.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::bce_with_logits_backward(cuda_dtype(op, x.dtype()), x.data_ptr(), void_or_null(t), dloss.data_ptr(),
                                   dloss_stride, scale, x.numel(), void_or_null(dx), void_or_null(dtarget), stream);
#endif
  });
}

void call_where(const char* op, const Shape& shape, const Tensor& out, const Tensor& cond, const Shape& cond_strides,
                const Tensor& a, const Shape& a_strides, const Tensor& b, const Shape& b_strides) {
  if (out.is_cpu()) {
    dispatch_float(op, out.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::where<T>(shape, out.data<T>(), out.strides().data(), cond.data<bool>(), cond_strides.data(), a.data<T>(),
                    a_strides.data(), b.data<T>(), b_strides.data());
    });
    return;
  }
  VLP_CHECK(cond.device() == out.device() && cond.dtype() == DType::Bool, op, ": the condition must be Bool on ",
            out.device());
  on_gpu(op, out.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::where(cuda_dtype(op, out.dtype()), shape, out.data_ptr(), out.strides().data(), cond.data<bool>(),
                cond_strides.data(), a.data_ptr(), a_strides.data(), b.data_ptr(), b_strides.data(), stream);
#endif
  });
}

namespace {
// The index as a contiguous I64 tensor on device (uploaded when device is a GPU).
Tensor index_on(const Tensor& index, Device device) { return convert(index, DType::I64, device); }
}  // namespace

void call_index_select(const char* op, const Tensor& x, const Tensor& index, const Tensor& y, int64_t outer,
                       int64_t n, int64_t inner) {
  const int64_t m = index.numel();
  if (x.is_cpu()) {
    dispatch_float(op, x.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::index_select<T>(x.data<T>(), index.data<int64_t>(), y.data<T>(), outer, n, m, inner);
    });
    return;
  }
  Tensor idx = index_on(index, x.device());
  on_gpu(op, x.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::index_select(int(x.element_size()), x.data_ptr(), idx.data<int64_t>(), y.data_ptr(), outer, n, m, inner,
                       stream);
#endif
  });
}

void call_index_add(const char* op, const Tensor& g, const Tensor& index, const Tensor& dx, int64_t outer, int64_t n,
                    int64_t inner) {
  const int64_t m = index.numel();
  if (g.is_cpu()) {
    dispatch_float(op, g.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::index_add<T>(g.data<T>(), index.data<int64_t>(), dx.data<T>(), outer, n, m, inner);
    });
    return;
  }
  Tensor idx = index_on(index, g.device());
  on_gpu(op, g.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::index_add(cuda_dtype(op, g.dtype()), g.data_ptr(), idx.data<int64_t>(), dx.data_ptr(), outer, n, m, inner,
                    stream);
#endif
  });
}

void call_max_dim(const char* op, const Tensor& x, const Tensor& values, const Tensor& indices, int64_t outer,
                  int64_t n, int64_t inner) {
  if (x.is_cpu()) {
    dispatch_float(op, x.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::max_dim<T>(x.data<T>(), values.data<T>(), indices.data<int64_t>(), outer, n, inner);
    });
    return;
  }
  on_gpu(op, x.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::max_dim(cuda_dtype(op, x.dtype()), x.data_ptr(), values.data_ptr(), indices.data<int64_t>(), outer, n,
                  inner, stream);
#endif
  });
}

void call_scatter_dim(const char* op, const Tensor& g, const Tensor& indices, const Tensor& dx, int64_t outer,
                      int64_t n, int64_t inner) {
  if (g.is_cpu()) {
    dispatch_float(op, g.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::scatter_dim<T>(g.data<T>(), indices.data<int64_t>(), dx.data<T>(), outer, n, inner);
    });
    return;
  }
  on_gpu(op, g.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::scatter_dim(cuda_dtype(op, g.dtype()), g.data_ptr(), indices.data<int64_t>(), dx.data_ptr(), outer, n,
                      inner, stream);
#endif
  });
}

void call_gather(const char* op, const Tensor& x, int64_t dim, const Tensor& index, const Tensor& out) {
  if (out.numel() == 0) return;
  if (x.is_cpu()) {
    dispatch_float(op, x.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::gather<T>(index.shape(), dim, x.data<T>(), x.strides().data(), index.data<int64_t>(), out.data<T>());
    });
    return;
  }
  VLP_CHECK(index.dim() <= 8, op, ": on CUDA the index has at most 8 dims, got ", shape_str(index.shape()));
  Tensor idx = index_on(index, x.device());
  on_gpu(op, x.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::gather(int(x.element_size()), index.shape(), dim, x.data_ptr(), x.strides().data(), x.size(dim),
                 idx.data<int64_t>(), out.data_ptr(), stream);
#endif
  });
}

void call_scatter_add(const char* op, const Tensor& out, int64_t dim, const Tensor& index, const Tensor& src) {
  if (index.numel() == 0) return;
  if (out.is_cpu()) {
    dispatch_float(op, out.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::scatter_add<T>(index.shape(), dim, out.data<T>(), out.strides().data(), index.data<int64_t>(),
                          src.data<T>(), src.strides().data());
    });
    return;
  }
  VLP_CHECK(src.dtype() == out.dtype(), op, ": src (", src.dtype(), ") and out (", out.dtype(), ") differ");
  Tensor idx = index_on(index, out.device());
  on_gpu(op, out.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::scatter_add(cuda_dtype(op, out.dtype()), index.shape(), dim, out.data_ptr(), out.strides().data(),
                      out.size(dim), idx.data<int64_t>(), src.data_ptr(), src.strides().data(), stream);
#endif
  });
}

void call_adaptive_max_pool_grid(const char* op, const Tensor& x, const Tensor& y, const Tensor& argmax) {
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3), oh = y.size(1), ow = y.size(2);
  if (x.is_cpu()) {
    dispatch_float(op, x.dtype(), [&](auto t) {
      using T = decltype(t);
      cpu::adaptive_max_pool_grid<T>(x.data<T>(), y.data<T>(), argmax.data<int64_t>(), B, H, W, C, oh, ow);
    });
    return;
  }
  on_gpu(op, x.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::adaptive_max_pool_grid(cuda_dtype(op, x.dtype()), x.data_ptr(), y.data_ptr(), argmax.data<int64_t>(), B, H,
                                 W, C, oh, ow, stream);
#endif
  });
}

void call_adaptive_max_pool_grid_backward(const char* op, const Tensor& dy, const Tensor& argmax, const Tensor& dx) {
  const int64_t B = dx.size(0), H = dx.size(1), W = dx.size(2), C = dx.size(3), oh = dy.size(1), ow = dy.size(2);
  if (dy.is_cpu()) {
    dispatch_float(op, dy.dtype(), [&](auto t) {
      using T = decltype(t);
      std::fill(dx.data<T>(), dx.data<T>() + dx.numel(), T(0));
      cpu::adaptive_max_pool_grid_backward<T>(dy.data<T>(), argmax.data<int64_t>(), dx.data<T>(), B, H, W, C, oh, ow);
    });
    return;
  }
  on_gpu(op, dy.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    cuda::adaptive_max_pool_grid_backward(cuda_dtype(op, dy.dtype()), dy.data_ptr(), argmax.data<int64_t>(),
                                          dx.data_ptr(), B, H, W, C, oh, ow, stream);
#endif
  });
}

void call_adamw_multi_tensor(const char* op, const std::vector<AdamWParamRef>& params, const cpu::AdamWScalars& s) {
  if (params.empty()) return;
  const Device device = params[0].param.device();
  const DType dt = params[0].param.dtype();
  for (const AdamWParamRef& p : params) {
    VLP_CHECK(!p.param.is_cpu() && p.param.device() == device && p.param.dtype() == dt && p.grad.dtype() == dt &&
                  p.grad.device() == device && p.exp_avg.dtype() == DType::F32 && p.exp_avg_sq.dtype() == DType::F32 &&
                  p.exp_avg.device() == device && p.exp_avg_sq.device() == device,
              op, ": multi-tensor AdamW takes CUDA tensors of one dtype and device with F32 state");
    VLP_CHECK(p.param.is_contiguous() && p.grad.is_contiguous() && p.exp_avg.is_contiguous() &&
                  p.exp_avg_sq.is_contiguous(),
              op, ": multi-tensor AdamW takes contiguous tensors");
    VLP_CHECK(dt != DType::BF16 || (p.master.defined() && p.master.dtype() == DType::F32 && p.master.is_contiguous()),
              op, ": BF16 parameters need contiguous F32 master weights");
  }
  on_gpu(op, device, [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    std::vector<cuda::AdamWTensor> ts;
    ts.reserve(params.size());
    for (const AdamWParamRef& p : params) {
      cuda::AdamWTensor t;
      t.param = p.param.data_ptr();
      t.grad = p.grad.data_ptr();
      t.exp_avg = p.exp_avg.data<float>();
      t.exp_avg_sq = p.exp_avg_sq.data<float>();
      t.master = dt == DType::BF16 ? p.master.data<float>() : nullptr;
      t.n = p.param.numel();
      ts.push_back(t);
    }
    cuda::adamw_multi_tensor(cuda_dtype(op, dt), ts, s, stream);
#else
    (void)stream;
    (void)s;
#endif
  });
}

double call_sum_of_squares(const char* op, const std::vector<Tensor>& xs) {
  if (xs.empty()) return 0.0;
  const Device device = xs[0].device();
  const DType dt = xs[0].dtype();
  for (const Tensor& x : xs)
    VLP_CHECK(!x.is_cpu() && x.device() == device && x.dtype() == dt && x.is_contiguous(), op,
              ": the CUDA sum of squares takes contiguous CUDA tensors of one dtype and device");
  double result = 0.0;
  on_gpu(op, device, [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    std::vector<const void*> ptrs;
    std::vector<int64_t> sizes;
    for (const Tensor& x : xs) {
      ptrs.push_back(x.data_ptr());
      sizes.push_back(x.numel());
    }
    result = cuda::sum_of_squares_multi(cuda_dtype(op, dt), ptrs, sizes, stream);
#else
    (void)stream;
#endif
  });
  return result;
}

// ---- fused LoRA ----

void call_lora_down_dropout(const char* op, const Tensor& x, int64_t ldx, const Tensor& a, const Tensor& h, int64_t m,
                            int64_t k, int64_t rank, double p, uint64_t seed, uint64_t offset) {
  if (m == 0) return;
  if (x.is_cpu()) {
    VLP_CHECK(ldx == k, op, ": the CPU down-projection needs a contiguous input (row stride ", ldx, ", ", k,
              " columns)");
    dispatch_float(op, x.dtype(), [&](auto t) {
      using T = decltype(t);
      const T* xd = x.data<T>();
      Tensor dropped;
      if (p > 0.0) {
        dropped = empty({m, k}, x.dtype());
        cpu::dropout<T>(x.data<T>(), dropped.data<T>(), m * k, p, seed, offset);
        xd = dropped.data<T>();
      }
      cpu::gemm<T>(false, true, m, rank, k, 1.0, xd, k, a.data<T>(), k, 0.0, h.data<T>(), rank);
    });
    return;
  }
  on_gpu(op, x.device(), [&](auto stream) {
#ifdef VLP_HAVE_CUDA
    const cuda::EwDType dt = cuda_dtype(op, x.dtype());
    if (rank <= cuda::kLoraMaxRank) {
      cuda::lora_down_dropout(dt, x.data_ptr(), ldx, a.data_ptr(), h.data_ptr(), m, k, rank, p, seed, offset, stream);
      return;
    }
    // Ranks above the kernel's register budget: the dropped x in a buffer, then a GEMM.
    const void* xd = x.data_ptr();
    int64_t ld = ldx;
    Tensor dropped;
    if (p > 0.0) {
      const Tensor xc = contiguous_raw(x);  // the dropout kernel indexes a contiguous [m, k]
      dropped = empty({m, k}, x.dtype(), x.device());
      cuda::dropout(dt, xc.data_ptr(), dropped.data_ptr(), nullptr, m * k, p, seed, offset, stream);
      xd = dropped.data_ptr(), ld = k;
    }
    cuda::GemmArgs g;
    g.trans_a = false, g.trans_b = true, g.m = m, g.n = rank, g.k = k;
    g.ab_dtype = g.c_dtype = dt == cuda::EwDType::F32 ? cuda::GemmDType::F32 : cuda::GemmDType::BF16;
    g.a = xd, g.lda = ld, g.b = a.data_ptr(), g.ldb = k, g.c = h.data_ptr(), g.ldc = rank;
    g.alpha = 1.f, g.beta = 0.f;
    cuda::gemm(g);
#endif
  });
}

}  // namespace vlp
