// The fused CPU routed-attention forward: cpp_routed_attention.py builds and loads
// it. Registers two entries of one kernel in torch.ops.biformer_mm_cpu:
//
// routed_attention_forward(q, k, v, rows, scale): heads-first inputs, the layout of
// torch.ops.biformer_mm.routed_attention. q, k: (R, W, D), v: (R, W, Dv), float32,
// contiguous; R = images x heads x regions query rows of W tokens. rows: (R * K,) int64,
// the K key rows each query row attends to (routed_rows() in chunked_routed_attention.py).
// Result: (R, W, Dv), softmax over the K * W routed tokens of the scaled logits, times
// their values.
//
// routed_attention_map_forward(qkv, r_idx, n_win, num_heads, qk_dim, scale, out_h, out_w):
// the same attention read from and written to channels-last maps, as the BRA module holds
// them, without its layout copies. qkv: (N, H, W, 2 * qk_dim + Cv) float32 contiguous, the
// module's qkv projection (queries, keys, values, each head-major); H and W multiples of
// n_win (padded). r_idx: (N, P, K) int64, the routed regions of each of the P = n_win^2
// regions (row-major). Result: (N, out_h, out_w, Cv), the top-left out_h x out_w tokens
// (those the padding was added to), the only queries computed.
//
// Per query row (heads-first) or query region (map, all heads), in at::parallel_for: copy
// its routed keys and values into a thread-local buffer, one GEMM for the logits, their
// exponentials in place, one GEMM for the output, whose rows are then divided by the
// exponentials' sums. Nothing larger than one row's logits is written, so a row's work
// stays in cache. The GEMMs are the Fortran BLAS sgemm_ that torch's library exports (MKL
// on x86-64); where it does not, the library fails to load, and cpp_routed_attention.py
// says so.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);

namespace {

// Column-major C (m x n) = alpha * op(A) op(B), as BLAS.
void gemm(char transa, char transb, int m, int n, int k, float alpha, const float* a,
          int lda, const float* b, int ldb, float* c, int ldc) {
  const float beta = 0.f;
  sgemm_(&transa, &transb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

// exp(x) for x <= 0: Cephes' expf (exp(x) = 2^n exp(r), |r| <= ln2 / 2, and exp(r) as
// 1 + r + r^2 P(r), P of degree 5); within 1 ulp of the rounded exact value for every float in
// [-87, 0] (checked against double exp). Inline branch-free arithmetic, so the compiler
// vectorises the softmax loop; below -87 (exp < 2e-38) it returns exp(-87).
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.f);
  // n = round(x / ln2): adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

// Each of the `rows` rows of `length` values of s becomes exp(s - max(s)) in place, and
// inv_sum[i] 1 / the sum of row i: the softmax is the row times inv_sum[i], which the
// caller applies to the (much shorter) output rows instead.
void exp_rows(float* s, float* inv_sum, int64_t rows, int64_t length) {
  for (int64_t i = 0; i < rows; ++i) {
    float* row = s + i * length;
    float top = row[0];
#pragma omp simd reduction(max : top)
    for (int64_t t = 0; t < length; ++t) top = row[t] > top ? row[t] : top;
#pragma omp simd
    for (int64_t t = 0; t < length; ++t) row[t] = exp_nonpositive(row[t] - top);
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t t = 0; t < length; ++t) sum += row[t];
    inv_sum[i] = 1.f / sum;
  }
}

// One query row's attention, all matrices row-major with the given row strides: out
// (W x Dv) = softmax(alpha * q (W x D) keys^T (D x L)) values (L x Dv). logits (W x L)
// and inv_sum (W) are scratch.
void attend(const float* q, int64_t ldq, const float* keys, int64_t ldk, const float* values,
            int64_t ldv, float* out, int64_t ldo, int64_t w, int64_t length, int64_t d,
            int64_t dv, float alpha, float* logits, float* inv_sum) {
  // Row-major logits (W x L) = alpha * q keys^T: column-major L x W.
  gemm('T', 'N', length, w, d, alpha, keys, ldk, q, ldq, logits, length);
  exp_rows(logits, inv_sum, w, length);
  // Row-major out (W x Dv) = exp(logits) (W x L) values (L x Dv), then each row divided
  // by its exponentials' sum.
  gemm('N', 'N', dv, w, length, 1.f, values, ldv, logits, length, out, ldo);
  for (int64_t i = 0; i < w; ++i) {
    float* row = out + i * ldo;
    const float f = inv_sum[i];
#pragma omp simd
    for (int64_t c = 0; c < dv; ++c) row[c] *= f;
  }
}

void check_float32(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous(), name,
              ": contiguous float32 expected");
}

at::Tensor routed_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                    const at::Tensor& v, const at::Tensor& rows,
                                    double scale) {
  for (const auto* t : {&q, &k, &v}) check_float32(*t, "routed_attention_forward");
  TORCH_CHECK(rows.scalar_type() == at::kLong && rows.is_contiguous(),
              "routed_attention_forward: contiguous int64 rows expected");
  TORCH_CHECK(q.dim() == 3 && k.sizes() == q.sizes() && v.dim() == 3 &&
                  v.size(0) == q.size(0) && v.size(1) == q.size(1),
              "routed_attention_forward: q, k (R, W, D) and v (R, W, Dv) expected");
  const int64_t num_rows = q.size(0), w = q.size(1), d = q.size(2), dv = v.size(2);
  auto out = at::empty({num_rows, w, dv}, q.options());
  if (num_rows == 0) return out;  // an empty batch
  TORCH_CHECK(rows.numel() % num_rows == 0,
              "routed_attention_forward: rows must list K key rows per query row");
  TORCH_CHECK(rows.min().item<int64_t>() >= 0 && rows.max().item<int64_t>() < num_rows,
              "routed_attention_forward: rows out of range");
  const int64_t topk = rows.numel() / num_rows, length = topk * w;
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const int64_t* rp = rows.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  const float alpha = static_cast<float>(scale);
  at::parallel_for(0, num_rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> logits(w * length), keys(length * d), values(length * dv), inv_sum(w);
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t j = 0; j < topk; ++j) {
        const int64_t src = rp[r * topk + j];
        std::copy_n(kp + src * w * d, w * d, keys.data() + j * w * d);
        std::copy_n(vp + src * w * dv, w * dv, values.data() + j * w * dv);
      }
      attend(qp + r * w * d, d, keys.data(), d, values.data(), dv, op + r * w * dv, dv, w,
             length, d, dv, alpha, logits.data(), inv_sum.data());
    }
  });
  return out;
}

at::Tensor routed_attention_map_forward(const at::Tensor& qkv, const at::Tensor& r_idx,
                                        int64_t n_win, int64_t num_heads, int64_t qk_dim,
                                        double scale, int64_t out_h, int64_t out_w) {
  check_float32(qkv, "routed_attention_map_forward");
  TORCH_CHECK(r_idx.scalar_type() == at::kLong && r_idx.is_contiguous() && r_idx.dim() == 3,
              "routed_attention_map_forward: contiguous int64 r_idx (N, P, K) expected");
  TORCH_CHECK(qkv.dim() == 4 && n_win > 0 && qkv.size(1) % n_win == 0 &&
                  qkv.size(2) % n_win == 0,
              "routed_attention_map_forward: qkv (N, H, W, C) with H and W multiples of "
              "n_win expected");
  const int64_t n = qkv.size(0), h = qkv.size(1), w_map = qkv.size(2), c = qkv.size(3);
  const int64_t cv = c - 2 * qk_dim;
  TORCH_CHECK(num_heads > 0 && qk_dim > 0 && cv > 0 && qk_dim % num_heads == 0 &&
                  cv % num_heads == 0,
              "routed_attention_map_forward: qkv channels must be 2 * qk_dim + Cv, both "
              "divisible by num_heads");
  TORCH_CHECK(0 <= out_h && out_h <= h && 0 <= out_w && out_w <= w_map,
              "routed_attention_map_forward: the kept out_h x out_w must fit in the map");
  const int64_t rh = h / n_win, rw = w_map / n_win, w = rh * rw, p = n_win * n_win;
  TORCH_CHECK(r_idx.size(0) == n && r_idx.size(1) == p && r_idx.size(2) > 0,
              "routed_attention_map_forward: r_idx (N, n_win^2, K) expected");
  auto out = at::empty({n, out_h, out_w, cv}, qkv.options());
  if (out.numel() == 0) return out;  // an empty batch or map
  TORCH_CHECK(r_idx.min().item<int64_t>() >= 0 && r_idx.max().item<int64_t>() < p,
              "routed_attention_map_forward: r_idx out of range");
  const int64_t topk = r_idx.size(2), length = topk * w, c_kv = qk_dim + cv;
  const int64_t d = qk_dim / num_heads, dv = cv / num_heads;
  const float* src = qkv.data_ptr<float>();
  // The first token of region `reg` of image `image`, and the offsets (in floats) of each
  // token of a region from it.
  auto region_start = [&](int64_t image, int64_t reg) {
    return src + ((image * h + reg / n_win * rh) * w_map + reg % n_win * rw) * c;
  };
  std::vector<int64_t> token(w);
  for (int64_t t = 0; t < w; ++t) token[t] = (t / rw * w_map + t % rw) * c;
  const int64_t* rp = r_idx.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  const float alpha = static_cast<float>(scale);
  at::parallel_for(0, n * p, 1, [&](int64_t begin, int64_t end) {
    // Per query region: its kept queries (at most W x qk_dim), its routed tokens' keys and
    // values (L x (qk_dim + Cv), each token's channels contiguous) and its output, all
    // heads; each head's GEMMs take column slices of them.
    std::vector<float> queries(w * qk_dim), kv(length * c_kv), result(w * cv),
        logits(w * length), inv_sum(w);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t image = r / p, top = r % p / n_win * rh, left = r % p % n_win * rw;
      // Only the query tokens inside the kept out_h x out_w are computed and written: the
      // rest (padding to a multiple of n_win) would be cropped. Every token of the routed
      // regions is a key, padding included, as in the original.
      const int64_t rows = std::min(rh, out_h - top), cols = std::min(rw, out_w - left);
      if (rows <= 0 || cols <= 0) continue;
      const float* region_src = region_start(image, r % p);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
          std::copy_n(region_src + (i * w_map + j) * c, qk_dim,
                      queries.data() + (i * cols + j) * qk_dim);
      for (int64_t j = 0; j < topk; ++j) {
        const float* kv_src = region_start(image, rp[r * topk + j]) + qk_dim;
        float* dst = kv.data() + j * w * c_kv;
        for (int64_t t = 0; t < w; ++t) std::copy_n(kv_src + token[t], c_kv, dst + t * c_kv);
      }
      for (int64_t m = 0; m < num_heads; ++m)
        attend(queries.data() + m * d, qk_dim, kv.data() + m * d, c_kv,
               kv.data() + qk_dim + m * dv, c_kv, result.data() + m * dv, cv, rows * cols,
               length, d, dv, alpha, logits.data(), inv_sum.data());
      float* dst = op + ((image * out_h + top) * out_w + left) * cv;
      for (int64_t i = 0; i < rows; ++i)
        std::copy_n(result.data() + i * cols * cv, cols * cv, dst + i * out_w * cv);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(biformer_mm_cpu, m) {
  m.def("routed_attention_forward(Tensor q, Tensor k, Tensor v, Tensor rows, float scale)"
        " -> Tensor");
  m.def("routed_attention_map_forward(Tensor qkv, Tensor r_idx, int n_win, int num_heads, "
        "int qk_dim, float scale, int out_h, int out_w) -> Tensor");
  m.impl("routed_attention_forward", c10::DispatchKey::CPU, &routed_attention_forward);
  m.impl("routed_attention_map_forward", c10::DispatchKey::CPU,
         &routed_attention_map_forward);
}
