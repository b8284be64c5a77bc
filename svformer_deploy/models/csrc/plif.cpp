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
//
// Spike packing (svformer_deploy.models.spike_packing) for saved spike tensors: n values in {0, 1} <-> ceil(n / 8)
// bytes, bit i of byte j = (value[8 j + i] != 0); unpacking writes exactly 0 or 1 in the tensor's dtype.
// plif_forward_bits is plif_forward that also writes its spikes' bits, each row of a block while it is in cache.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t BLOCK = 256;

int64_t grain_blocks(int64_t T) {
  // about 64k element-steps per task
  return std::max<int64_t>(1, 65536 / (T * BLOCK));
}

constexpr int64_t PACK_GRAIN = 1 << 14;  // bytes of bits per task
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "spike packing assumes a little-endian machine");

// b[i] = w[i] != 0 in byte i of a 64-bit word; the multiply gathers bit 0 of every byte i into bit 56 + i (the
// partial products at 8 i + 7 k + 7 are all distinct: no carries)
inline uint8_t gather_bits(const uint8_t* b) {
  uint64_t word;
  std::memcpy(&word, b, 8);
  return static_cast<uint8_t>((word * 0x0102040810204080ULL) >> 56);
}

// bits of w[0 .. 8 nbytes), nbytes <= 8, the last byte holding m of them (64 values at a time: the compares vectorize)
template <typename scalar_t>
inline void pack_bytes(const scalar_t* w, uint8_t* p, int64_t nbytes, int64_t m) {
  uint8_t b[64] = {};
  if (nbytes == 8 && m == 8) {
    for (int i = 0; i < 64; ++i) b[i] = w[i] != scalar_t(0);
  } else {
    for (int64_t i = 0; i < 8 * (nbytes - 1) + m; ++i) b[i] = w[i] != scalar_t(0);
  }
  for (int64_t k = 0; k < nbytes; ++k) p[k] = gather_bits(b + 8 * k);
}

template <typename scalar_t>
void forward_kernel(const scalar_t* x, scalar_t* s, uint8_t* bits, int64_t T, int64_t N, scalar_t k, scalar_t vth) {
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
        if (bits) {  // the row just written, still in cache, as bits (N and BLOCK are multiples of 8)
          uint8_t* bt = bits + (t * N + i0) / 8;
          for (int64_t q = 0; q < n / 8; q += 8) pack_bytes(st + 8 * q, bt + q, std::min<int64_t>(8, n / 8 - q), 8);
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

// x as the kernels read it: a contiguous CPU tensor with a time axis (a copy only when it is not contiguous)
at::Tensor checked_input(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(x.dim() >= 1, name, " must have a time axis");
  return x.contiguous();
}

// k = sigmoid(w) in the dtype of x, as a one-element tensor: an operator argument that torch.compile can trace
// (a Python float taken from a tensor would break its graph)
double decay_of(const at::Tensor& k) {
  TORCH_CHECK(k.numel() == 1 && k.device().is_cpu(), "k must be a one-element CPU tensor");
  return k.item<double>();
}

void run_forward(const at::Tensor& x, at::Tensor& s, uint8_t* bits, double k, double v_threshold) {
  const int64_t T = x.size(0), N = T ? x.numel() / T : 0;
  if (N == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "plif_forward", [&] {
    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), s.mutable_data_ptr<scalar_t>(), bits, T, N,
                             static_cast<scalar_t>(k), static_cast<scalar_t>(v_threshold));
  });
}

at::Tensor plif_forward(const at::Tensor& x_in, const at::Tensor& k, double v_threshold) {
  const auto x = checked_input(x_in, "x");
  auto s = at::empty_like(x);
  run_forward(x, s, nullptr, decay_of(k), v_threshold);
  return s;
}

// the spikes and, in the same pass, their bits as pack_spikes writes them; needs (numel / T) % 8 == 0
std::tuple<at::Tensor, at::Tensor> plif_forward_bits(const at::Tensor& x_in, const at::Tensor& k,
                                                     double v_threshold) {
  const auto x = checked_input(x_in, "x");
  TORCH_CHECK(x.size(0) > 0 && (x.numel() / x.size(0)) % 8 == 0, "elements per timestep must be a multiple of 8");
  auto s = at::empty_like(x);
  auto bits = at::empty({x.numel() / 8}, x.options().dtype(at::kByte));
  run_forward(x, s, bits.mutable_data_ptr<uint8_t>(), decay_of(k), v_threshold);
  return {s, bits};
}

std::tuple<at::Tensor, at::Tensor> plif_backward(const at::Tensor& x_in, const at::Tensor& grad_s_in,
                                                 const at::Tensor& k_in, double v_threshold, double alpha) {
  const auto x = checked_input(x_in, "x");
  const auto grad_s = checked_input(grad_s_in, "grad_s");
  const double k = decay_of(k_in);
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


at::Tensor pack_spikes(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 1 && x.is_contiguous(), "x must be a 1-D contiguous CPU tensor");
  const int64_t n = x.numel(), nbytes = (n + 7) / 8;
  auto bits = at::empty({nbytes}, x.options().dtype(at::kByte));
  uint8_t* p = bits.mutable_data_ptr<uint8_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "pack_spikes", [&] {
    const scalar_t* v = x.const_data_ptr<scalar_t>();
    const int64_t nwords = (nbytes + 7) / 8;  // groups of 64 values (8 bytes of bits)
    at::parallel_for(0, nwords, PACK_GRAIN / 8, [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t j = 8 * g, bytes = std::min<int64_t>(8, nbytes - j);
        pack_bytes(v + 8 * j, p + j, bytes, std::min<int64_t>(8, n - 8 * (j + bytes - 1)));
      }
    });
  });
  return bits;
}

// values[offset + k] = bit k of bits, k < n; values[:offset] = 0 (the storage in front of a view with an offset)
at::Tensor unpack_spikes(const at::Tensor& bits, int64_t n, at::ScalarType dtype, int64_t offset) {
  TORCH_CHECK(bits.device().is_cpu() && bits.dim() == 1 && bits.is_contiguous() && bits.scalar_type() == at::kByte,
              "bits must be a 1-D contiguous CPU uint8 tensor");
  TORCH_CHECK(n >= 0 && offset >= 0 && bits.numel() == (n + 7) / 8, "bits must hold ceil(n / 8) bytes");
  auto out = at::empty({offset + n}, bits.options().dtype(dtype));
  const uint8_t* p = bits.const_data_ptr<uint8_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "unpack_spikes", [&] {
    // the 8 values of every byte value, looked up instead of computed
    std::vector<scalar_t> table(256 * 8);
    for (int byte = 0; byte < 256; ++byte)
      for (int i = 0; i < 8; ++i) table[byte * 8 + i] = (byte >> i) & 1 ? scalar_t(1) : scalar_t(0);
    scalar_t* v = out.mutable_data_ptr<scalar_t>();
    std::fill(v, v + offset, scalar_t(0));
    v += offset;
    const int64_t full = n / 8;  // bytes with all 8 values present
    at::parallel_for(0, full, PACK_GRAIN, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) std::memcpy(v + 8 * j, table.data() + p[j] * 8, 8 * sizeof(scalar_t));
    });
    for (int64_t k = 8 * full; k < n; ++k) v[k] = table[p[full] * 8 + (k - 8 * full)];
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(svformer_deploy, m) {
  m.def("plif_forward(Tensor x, Tensor k, float v_threshold) -> Tensor");
  m.def("plif_backward(Tensor x, Tensor grad_s, Tensor k, float v_threshold, float alpha) -> (Tensor, Tensor)");
  m.def("plif_forward_bits(Tensor x, Tensor k, float v_threshold) -> (Tensor, Tensor)");
  m.def("pack_spikes(Tensor x) -> Tensor");
  m.def("unpack_spikes(Tensor bits, int n, ScalarType dtype, int offset) -> Tensor");
}

TORCH_LIBRARY_IMPL(svformer_deploy, CPU, m) {
  m.impl("plif_forward", &plif_forward);
  m.impl("plif_backward", &plif_backward);
  m.impl("plif_forward_bits", &plif_forward_bits);
  m.impl("pack_spikes", &pack_spikes);
  m.impl("unpack_spikes", &unpack_spikes);
}
