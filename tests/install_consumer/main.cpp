// Trains one step of a tiny linear model through the installed vlpeft and prints the gradient.
#include <cstdio>

#include "autograd/ops.h"

int main() {
  vlp::Tensor w = vlp::from_vector({1, 2, 3}, {1, 3}).set_requires_grad();
  vlp::Tensor x = vlp::from_vector({1, 1, 1, 2, 2, 2}, {2, 3});
  vlp::backward(vlp::sum(vlp::linear(x, w)));
  std::printf("grad %g %g %g\n", to_vector(w.grad())[0], to_vector(w.grad())[1], to_vector(w.grad())[2]);
  return 0;
}
