// Batch norm over NHWC data viewed as [rows, C]. Training mode uses the batch
// statistics and returns them (the caller keeps running averages); its
// backward yields dx, dgamma and dbeta in two passes over the data.
// Training mode optionally ends a ResNet block in the same pass:
// y = relu(bn(x) + residual). Its backward masks dy by y > 0 on the fly and
// hands the masked gradient out for the residual, so neither the add nor the
// ReLU costs a pass of its own in either direction.
//
// Rows are split across threads in blocks; per-channel sums go through float
// block accumulators into double partials (see channelSums).
#include <algorithm>
#include <cmath>

#include "common.h"

namespace selfsup {
namespace {

struct Rows {
  int64_t rows, c;
};

Rows rowsOf(const std::vector<int64_t>& dims, const char* what) {
  if (dims.size() != 2) throw std::invalid_argument(std::string(what) + ": dims must be [rows, channels]");
  return {dims[0], dims[1]};
}

// sums[k][ch] = sum over rows of f_k(row, ch), for K accumulated quantities.
// f adds one row into K float arrays of C; each thread flushes them into its
// double partial sums every kBlockRows rows. Float accumulators vectorise
// twice as wide and need no conversions (the stats pass ran 2-3x faster on
// warm data); a block of 64 rows keeps their rounding near float's epsilon,
// and the double partials keep long reductions (rows = N*H*W) accurate.
constexpr int64_t kBlockRows = 64;

template <int K, typename F>
void channelSums(const Rows& s, std::vector<double>* sums, F f) {
  int threads = s.rows * s.c >= kParallelGrain ? omp_get_max_threads() : 1;
  std::vector<std::vector<double>> partial(threads * K, std::vector<double>(s.c, 0.0));
  const int64_t blocks = (s.rows + kBlockRows - 1) / kBlockRows;
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num();
    std::vector<float> block(K * s.c);
    float* acc[K];
    for (int k = 0; k < K; ++k) acc[k] = block.data() + k * s.c;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      std::fill(block.begin(), block.end(), 0.f);
      const int64_t end = std::min(s.rows, (b + 1) * kBlockRows);
      for (int64_t r = b * kBlockRows; r < end; ++r) f(r, acc);
      for (int k = 0; k < K; ++k) {
        double* mine = partial[t * K + k].data();
        for (int64_t ch = 0; ch < s.c; ++ch) mine[ch] += acc[k][ch];
      }
    }
  }
  for (int k = 0; k < K; ++k) {
    sums[k].assign(s.c, 0.0);
    for (int t = 0; t < threads; ++t)
      for (int64_t ch = 0; ch < s.c; ++ch) sums[k][ch] += partial[t * K + k][ch];
  }
}

Napi::Value BatchNormTrain(const Napi::CallbackInfo& info) {
  Rows s = rowsOf(intList(info[6], "dims"), "batchNormTrain");
  const float* x = floatsOfLength(info[0], s.rows * s.c, "x");
  const float* gamma = floatsOfLength(info[1], s.c, "gamma");
  const float* beta = floatsOfLength(info[2], s.c, "beta");
  float* y = floatsOfLength(info[3], s.rows * s.c, "y");
  float* meanOut = floatsOfLength(info[4], s.c, "mean");
  float* varOut = floatsOfLength(info[5], s.c, "variance");
  double eps = info[7].As<Napi::Number>().DoubleValue();
  const float* residual = optionalFloatsOfLength(info[8], s.rows * s.c, "residual");
  bool relu = info[9].As<Napi::Boolean>().Value();
  const int64_t C = s.c;

  // One pass for both moments, shifted by the first row (which
  // lies within a few standard deviations of the mean): sum(x - k) and
  // sum((x - k)^2) then give the variance without float32's cancellation
  // in E[x^2] - E[x]^2, and x is read once instead of twice.
  std::vector<float> shiftBy = s.rows > 0 ? std::vector<float>(x, x + C) : std::vector<float>(C, 0.f);
  const float* k = shiftBy.data();
  std::vector<double> sums[2];
  channelSums<2>(s, sums, [&](int64_t r, float** acc) {
    const float* xr = x + r * C;
    float* a0 = acc[0];
    float* a1 = acc[1];
#pragma omp simd
    for (int64_t ch = 0; ch < C; ++ch) {
      float d = xr[ch] - k[ch];
      a0[ch] += d;
      a1[ch] += d * d;
    }
  });
  std::vector<float> scale(C), shift(C);
  for (int64_t ch = 0; ch < C; ++ch) {
    double meanShifted = sums[0][ch] / s.rows;
    double var = std::max(0.0, sums[1][ch] / s.rows - meanShifted * meanShifted);
    float mean = static_cast<float>(k[ch] + meanShifted);
    meanOut[ch] = mean;
    varOut[ch] = static_cast<float>(var);
    scale[ch] = static_cast<float>(gamma[ch] / std::sqrt(var + eps));
    shift[ch] = beta[ch] - mean * scale[ch];
  }
  const float* sc = scale.data();
  const float* sh = shift.data();
#pragma omp parallel for schedule(static) if (s.rows * C >= kParallelGrain)
  for (int64_t r = 0; r < s.rows; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    if (residual) {
      const float* rr = residual + r * C;
      for (int64_t ch = 0; ch < C; ++ch) yr[ch] = xr[ch] * sc[ch] + sh[ch] + rr[ch];
    } else {
      for (int64_t ch = 0; ch < C; ++ch) yr[ch] = xr[ch] * sc[ch] + sh[ch];
    }
    if (relu)
      for (int64_t ch = 0; ch < C; ++ch) yr[ch] = yr[ch] > 0.f ? yr[ch] : 0.f;
  }
  return info.Env().Undefined();
}

Napi::Value BatchNormTrainBackward(const Napi::CallbackInfo& info) {
  Rows s = rowsOf(intList(info[8], "dims"), "batchNormTrainBackward");
  const float* x = floatsOfLength(info[0], s.rows * s.c, "x");
  const float* dy = floatsOfLength(info[1], s.rows * s.c, "dy");
  const float* gamma = floatsOfLength(info[2], s.c, "gamma");
  const float* mean = floatsOfLength(info[3], s.c, "mean");
  const float* variance = floatsOfLength(info[4], s.c, "variance");
  float* dx = floatsOfLength(info[5], s.rows * s.c, "dx");
  float* dgamma = floatsOfLength(info[6], s.c, "dgamma");
  float* dbeta = floatsOfLength(info[7], s.c, "dbeta");
  double eps = info[9].As<Napi::Number>().DoubleValue();
  // With the forward's ReLU: its output y masks dy, and dresidual (when given)
  // receives the masked dy. Without it the residual's gradient is dy itself.
  const float* y = optionalFloatsOfLength(info[10], s.rows * s.c, "y");
  float* dresidual = optionalFloatsOfLength(info[11], s.rows * s.c, "dresidual");
  const int64_t C = s.c;

  std::vector<float> invstd(C);
  for (int64_t ch = 0; ch < C; ++ch) invstd[ch] = static_cast<float>(1.0 / std::sqrt(variance[ch] + eps));
  const float* is = invstd.data();
  // sums[0] = sum(dy), sums[1] = sum(dy * xhat)
  std::vector<double> sums[2];
  channelSums<2>(s, sums, [&](int64_t r, float** acc) {
    const float* xr = x + r * C;
    const float* gr = dy + r * C;
    float* a0 = acc[0];
    float* a1 = acc[1];
    if (y) {
      const float* yr = y + r * C;
      // A multiply by the mask, not a select: the select does not vectorise here.
#pragma omp simd
      for (int64_t ch = 0; ch < C; ++ch) {
        float g = gr[ch] * static_cast<float>(yr[ch] > 0.f);
        a0[ch] += g;
        a1[ch] += g * ((xr[ch] - mean[ch]) * is[ch]);
      }
    } else {
#pragma omp simd
      for (int64_t ch = 0; ch < C; ++ch) {
        a0[ch] += gr[ch];
        a1[ch] += gr[ch] * ((xr[ch] - mean[ch]) * is[ch]);
      }
    }
  });
  // dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
  std::vector<float> k(C), meanDy(C), meanDyXhat(C);
  for (int64_t ch = 0; ch < C; ++ch) {
    dbeta[ch] = static_cast<float>(sums[0][ch]);
    dgamma[ch] = static_cast<float>(sums[1][ch]);
    k[ch] = gamma[ch] * is[ch];
    meanDy[ch] = static_cast<float>(sums[0][ch] / s.rows);
    meanDyXhat[ch] = static_cast<float>(sums[1][ch] / s.rows);
  }
  const float *kk = k.data(), *md = meanDy.data(), *mdx = meanDyXhat.data();
#pragma omp parallel for schedule(static) if (s.rows * C >= kParallelGrain)
  for (int64_t r = 0; r < s.rows; ++r) {
    const float* xr = x + r * C;
    const float* gr = dy + r * C;
    float* dr = dx + r * C;
    // Three loops, not one with branches inside, so each vectorises: as
    // scalar code the ReLU mask is a branch that mispredicts half the time
    // (4x slower). GCC if-converts the mask only with dy loaded
    // unconditionally and `omp simd`.
    if (y && dresidual) {
      const float* yr = y + r * C;
      float* rr = dresidual + r * C;
#pragma omp simd
      for (int64_t ch = 0; ch < C; ++ch) {
        float d = gr[ch];
        float g = yr[ch] > 0.f ? d : 0.f;
        rr[ch] = g;
        dr[ch] = kk[ch] * (g - md[ch] - (xr[ch] - mean[ch]) * is[ch] * mdx[ch]);
      }
    } else if (y) {
      const float* yr = y + r * C;
#pragma omp simd
      for (int64_t ch = 0; ch < C; ++ch) {
        float d = gr[ch];
        float g = yr[ch] > 0.f ? d : 0.f;
        dr[ch] = kk[ch] * (g - md[ch] - (xr[ch] - mean[ch]) * is[ch] * mdx[ch]);
      }
    } else {
      for (int64_t ch = 0; ch < C; ++ch) dr[ch] = kk[ch] * (gr[ch] - md[ch] - (xr[ch] - mean[ch]) * is[ch] * mdx[ch]);
    }
  }
  return info.Env().Undefined();
}

Napi::Value BatchNormInference(const Napi::CallbackInfo& info) {
  Rows s = rowsOf(intList(info[6], "dims"), "batchNormInference");
  const float* x = floatsOfLength(info[0], s.rows * s.c, "x");
  const float* mean = floatsOfLength(info[1], s.c, "mean");
  const float* variance = floatsOfLength(info[2], s.c, "variance");
  const float* scaleIn = optionalFloatsOfLength(info[3], s.c, "scale");
  const float* offsetIn = optionalFloatsOfLength(info[4], s.c, "offset");
  float* y = floatsOfLength(info[5], s.rows * s.c, "y");
  double eps = info[7].As<Napi::Number>().DoubleValue();
  const int64_t C = s.c;
  std::vector<float> scale(C), shift(C);
  for (int64_t ch = 0; ch < C; ++ch) {
    scale[ch] = static_cast<float>((scaleIn ? scaleIn[ch] : 1.f) / std::sqrt(variance[ch] + eps));
    shift[ch] = (offsetIn ? offsetIn[ch] : 0.f) - mean[ch] * scale[ch];
  }
  const float *sc = scale.data(), *sh = shift.data();
#pragma omp parallel for schedule(static) if (s.rows * C >= kParallelGrain)
  for (int64_t r = 0; r < s.rows; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    for (int64_t ch = 0; ch < C; ++ch) yr[ch] = xr[ch] * sc[ch] + sh[ch];
  }
  return info.Env().Undefined();
}

}  // namespace

void InitBatchNorm(Napi::Env env, Napi::Object exports) {
  exports.Set("batchNormTrain", Napi::Function::New(env, BatchNormTrain));
  exports.Set("batchNormTrainBackward", Napi::Function::New(env, BatchNormTrainBackward));
  exports.Set("batchNormInference", Napi::Function::New(env, BatchNormInference));
}

}  // namespace selfsup
