// The fused CPU routed-attention forward: cpp_routed_attention.py builds and loads
// it. Registers torch.ops.biformer_mm_cpu.routed_attention_forward(q, k, v, rows, scale).
//
// q, k: (R, W, D), v: (R, W, Dv), float32, contiguous; R = images x heads x regions query
// rows of W tokens. rows: (R * K,) int64, the K key rows each query row attends to
// (routed_rows() in chunked_routed_attention.py). Result: (R, W, Dv), softmax over the
// K * W routed tokens of the scaled logits, times their values.
//
// Per query row, in at::parallel_for: copy its routed keys and values into a thread-local
// buffer, one GEMM for the logits, their exponentials in place, one GEMM for the output,
// whose rows are then divided by the exponentials' sums. Nothing larger than one row's
// logits is written, so a row's work stays in cache. The GEMMs are the Fortran BLAS
// sgemm_ that torch's library exports (MKL on x86-64); where it does not, the library
// fails to load, and cpp_routed_attention.py says so.
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

// exp(x) for x <= 0: Cephes' expf (exp(x) = 2^n exp(r), |r| <= ln2 / 2, a degree-6
// polynomial for exp(r)); within 1 ulp of the rounded exact value for every float in
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

at::Tensor routed_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                    const at::Tensor& v, const at::Tensor& rows,
                                    double scale) {
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat &&
                  v.scalar_type() == at::kFloat,
              "routed_attention_forward: float32 q, k, v expected");
  TORCH_CHECK(rows.scalar_type() == at::kLong, "routed_attention_forward: int64 rows");
  TORCH_CHECK(q.dim() == 3 && k.sizes() == q.sizes() && v.dim() == 3 &&
                  v.size(0) == q.size(0) && v.size(1) == q.size(1),
              "routed_attention_forward: q, k (R, W, D) and v (R, W, Dv) expected");
  TORCH_CHECK(q.is_contiguous() && k.is_contiguous() && v.is_contiguous() &&
                  rows.is_contiguous(),
              "routed_attention_forward: contiguous inputs expected");
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
      // Row-major logits (W x L) = scale * q (W x D) keys^T: column-major L x W.
      gemm('T', 'N', length, w, d, alpha, keys.data(), d, qp + r * w * d, d,
           logits.data(), length);
      exp_rows(logits.data(), inv_sum.data(), w, length);
      // Row-major out (W x Dv) = exp(logits) (W x L) values (L x Dv), then each row
      // divided by its exponentials' sum.
      float* out_row = op + r * w * dv;
      gemm('N', 'N', dv, w, length, 1.f, values.data(), dv, logits.data(), length, out_row,
           dv);
      for (int64_t i = 0; i < w; ++i) {
#pragma omp simd
        for (int64_t c = 0; c < dv; ++c) out_row[i * dv + c] *= inv_sum[i];
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(biformer_mm_cpu, m) {
  m.def("routed_attention_forward(Tensor q, Tensor k, Tensor v, Tensor rows, float scale)"
        " -> Tensor");
  m.impl("routed_attention_forward", c10::DispatchKey::CPU, &routed_attention_forward);
}
