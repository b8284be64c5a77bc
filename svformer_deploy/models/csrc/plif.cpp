// Fused multi-step PLIF on CPU: one kernel for the forward over all T steps, one for the BPTT backward.
//
// Same arithmetic as svformer_deploy.models.neurons._PLIFMultiStep (the pure-torch reference), one rounded
// operation at a time in the tensor's dtype (built with -ffp-contract=off: no fused multiply-add):
//   H[t] = (X[t] - V[t-1]) * k + V[t-1]       S[t] = H[t] >= V_th       V[t] = S[t] ? 0 : H[t]      V[-1] = 0
// Backward (detach_reset, ATan surrogate), per element, t = T-1 .. 0, with G_V = 0 after the last step:
//   sg   = alpha/2 * 1 / (1 + ((H[t] - V_th) * pi/2 alpha)^2)
//   G_H  = sg * dL/dS[t] + (S[t] ? 0 : G_V)        dL/dX[t] = G_H * k        G_V = G_H * (1 - k)
//   dL/dk += (X[t] - V[t-1]) * G_H                 (summed in double)
// The forward saves nothing but X: the backward recomputes H block by block (T x BLOCK values in cache).
// Elements are split into fixed blocks of BLOCK; dL/dk is summed per element over t, then over the block's elements,
// then over blocks, always in the same order, so the result does not depend on the number of threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t BLOCK = 256;

int64_t grain_blocks(int64_t T) {
  // about 64k element-steps per task
  return std::max<int64_t>(1, 65536 / (T * BLOCK));
}

template <typename scalar_t>
void forward_kernel(const scalar_t* x, scalar_t* s, int64_t T, int64_t N, scalar_t k, scalar_t vth) {
  const int64_t nblocks = (N + BLOCK - 1) / BLOCK;
  at::parallel_for(0, nblocks, grain_blocks(T), [&, k, vth](int64_t b0, int64_t b1) {
    scalar_t v[BLOCK];
    const scalar_t zero(0), one(1);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * BLOCK, n = std::min(BLOCK, N - i0);
      for (int64_t j = 0; j < n; ++j) v[j] = zero;
      for (int64_t t = 0; t < T; ++t) {
        const scalar_t* xt = x + t * N + i0;
        scalar_t* st = s + t * N + i0;
        for (int64_t j = 0; j < n; ++j) {
          const scalar_t d = xt[j] - v[j];
          const scalar_t m = d * k;
          const scalar_t h = m + v[j];
          const bool fired = h >= vth;
          st[j] = fired ? one : zero;
          v[j] = fired ? zero : h;
        }
      }
    }
  });
}

template <typename scalar_t, typename opmath_t = at::opmath_type<scalar_t>>
void backward_kernel(const scalar_t* x, const scalar_t* gs, scalar_t* gx, double* partial, int64_t T, int64_t N,
                     scalar_t k, scalar_t vth, opmath_t c1, opmath_t c2) {
  const int64_t nblocks = (N + BLOCK - 1) / BLOCK;
  at::parallel_for(0, nblocks, grain_blocks(T), [&, k, vth, c1, c2](int64_t b0, int64_t b1) {
    // constants local to the loop body (not captured references): lets the compiler vectorize the selects
    const scalar_t zero(0), one(1);
    const scalar_t one_minus_k = one - k;
    std::vector<scalar_t> hbuf(T * BLOCK);
    scalar_t gv[BLOCK], vprev[BLOCK];
    double acc[BLOCK];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * BLOCK, n = std::min(BLOCK, N - i0);
      // recompute H for the block (the forward's arithmetic)
      for (int64_t j = 0; j < n; ++j) gv[j] = zero;  // used as V here
      for (int64_t t = 0; t < T; ++t) {
        const scalar_t* xt = x + t * N + i0;
        scalar_t* ht = hbuf.data() + t * BLOCK;
        for (int64_t j = 0; j < n; ++j) {
          const scalar_t d = xt[j] - gv[j];
          const scalar_t m = d * k;
          const scalar_t h = m + gv[j];
          ht[j] = h;
          gv[j] = (h >= vth) ? zero : h;
        }
      }
      // per-lane float64 sums (a vectorizable loop; a single running sum would need reassociation)
      for (int64_t j = 0; j < n; ++j) {
        gv[j] = zero;
        acc[j] = 0.0;
      }
      for (int64_t t = T - 1; t >= 0; --t) {
        const scalar_t* xt = x + t * N + i0;
        const scalar_t* gst = gs + t * N + i0;
        scalar_t* gxt = gx + t * N + i0;
        const scalar_t* ht = hbuf.data() + t * BLOCK;
        // V[t-1] = H[t-1] unless it fired (0), and V[-1] = 0
        if (t > 0) {
          const scalar_t* hp = hbuf.data() + (t - 1) * BLOCK;
          for (int64_t j = 0; j < n; ++j) vprev[j] = (hp[j] >= vth) ? zero : hp[j];
        } else {
          for (int64_t j = 0; j < n; ++j) vprev[j] = zero;
        }
        for (int64_t j = 0; j < n; ++j) {
          const scalar_t h = ht[j];
          scalar_t a = h - vth;
          a = static_cast<scalar_t>(static_cast<opmath_t>(a) * c1);
          a = a * a;
          a = a + one;
          a = one / a;
          a = static_cast<scalar_t>(static_cast<opmath_t>(a) * c2);
          const scalar_t carried = (h >= vth) ? zero : gv[j];
          const scalar_t m = a * gst[j];
          const scalar_t g = m + carried;
          const scalar_t dk = xt[j] - vprev[j];  // at t = 0: X - 0 = X exactly, as the reference's clone
          const scalar_t prod = dk * g;
          acc[j] += static_cast<double>(prod);
          gxt[j] = g * k;
          gv[j] = g * one_minus_k;
        }
      }
      double sum = 0.0;
      for (int64_t j = 0; j < n; ++j) sum += acc[j];
      partial[b] = sum;
    }
  });
}

void check_input(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(x.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(x.dim() >= 1, name, " must have a time axis");
}

at::Tensor plif_forward(const at::Tensor& x, double k, double v_threshold) {
  check_input(x, "x");
  auto s = at::empty_like(x);
  const int64_t T = x.size(0), N = T ? x.numel() / T : 0;
  if (N == 0) return s;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "plif_forward", [&] {
    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), s.mutable_data_ptr<scalar_t>(), T, N,
                             static_cast<scalar_t>(k), static_cast<scalar_t>(v_threshold));
  });
  return s;
}

std::tuple<at::Tensor, at::Tensor> plif_backward(const at::Tensor& x, const at::Tensor& grad_s, double k,
                                                 double v_threshold, double alpha) {
  check_input(x, "x");
  check_input(grad_s, "grad_s");
  TORCH_CHECK(x.sizes() == grad_s.sizes() && x.scalar_type() == grad_s.scalar_type(),
              "grad_s must match x in shape and dtype");
  auto gx = at::empty_like(x);
  const int64_t T = x.size(0), N = T ? x.numel() / T : 0;
  const int64_t nblocks = (N + BLOCK - 1) / BLOCK;
  auto partial = at::zeros({std::max<int64_t>(nblocks, 1)}, x.options().dtype(at::kDouble));
  if (N > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "plif_backward", [&] {
      // the reference multiplies by the Python scalars pi/2*alpha and alpha/2, which torch rounds to the
      // op-math type (float for float/half/bfloat16, double for double) before the product is rounded
      using opmath_t = at::opmath_type<scalar_t>;
      backward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), grad_s.const_data_ptr<scalar_t>(),
                                gx.mutable_data_ptr<scalar_t>(), partial.mutable_data_ptr<double>(), T, N,
                                static_cast<scalar_t>(k), static_cast<scalar_t>(v_threshold),
                                static_cast<opmath_t>(M_PI / 2 * alpha), static_cast<opmath_t>(alpha / 2));
    });
  }
  return {gx, partial.sum()};
}

}  // namespace

TORCH_LIBRARY(svformer_deploy, m) {
  m.def("plif_forward(Tensor x, float k, float v_threshold) -> Tensor");
  m.def("plif_backward(Tensor x, Tensor grad_s, float k, float v_threshold, float alpha) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(svformer_deploy, CPU, m) {
  m.impl("plif_forward", &plif_forward);
  m.impl("plif_backward", &plif_backward);
}
