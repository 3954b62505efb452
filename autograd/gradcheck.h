// gradcheck: the analytic gradient of f against float64 central differences.
//
// f maps the inputs to one tensor; every input that requires grad must be F64 and is checked. The
// scalar checked is sum(f(inputs) * w) for a fixed random w, so every output element takes part.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace vlp {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-5;
  uint64_t seed = 1234;
};

// "" when every gradient element matches; otherwise a message naming the input, element and values.
std::string gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                      const GradcheckOptions& options = {});

}  // namespace vlp
