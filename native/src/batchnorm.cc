// Batch norm over NHWC data viewed as [rows, C]. Training mode uses the batch
// statistics and returns them (the caller keeps running averages); its
// backward yields dx, dgamma and dbeta in two passes over the data.
//
// Rows are split across threads; each thread accumulates per-channel partial
// sums in double, so long reductions (rows = N*H*W) stay accurate.
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
template <int K, typename F>
void channelSums(const Rows& s, std::vector<double>* sums, F f) {
  int threads = s.rows * s.c >= kParallelGrain ? omp_get_max_threads() : 1;
  std::vector<std::vector<double>> partial(threads * K, std::vector<double>(s.c, 0.0));
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num();
    std::vector<double>* mine = &partial[t * K];
#pragma omp for schedule(static)
    for (int64_t r = 0; r < s.rows; ++r) f(r, mine);
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
  const int64_t C = s.c;

  std::vector<double> sum[1];
  channelSums<1>(s, sum, [&](int64_t r, std::vector<double>* acc) {
    const float* xr = x + r * C;
    double* a = acc[0].data();
    for (int64_t ch = 0; ch < C; ++ch) a[ch] += xr[ch];
  });
  std::vector<float> mean(C), scale(C), shift(C);
  for (int64_t ch = 0; ch < C; ++ch) mean[ch] = static_cast<float>(sum[0][ch] / s.rows);
  // Second pass around the mean: the textbook E[x^2]-E[x]^2 loses precision.
  std::vector<double> sq[1];
  channelSums<1>(s, sq, [&](int64_t r, std::vector<double>* acc) {
    const float* xr = x + r * C;
    double* a = acc[0].data();
    for (int64_t ch = 0; ch < C; ++ch) {
      double d = xr[ch] - mean[ch];
      a[ch] += d * d;
    }
  });
  for (int64_t ch = 0; ch < C; ++ch) {
    double var = sq[0][ch] / s.rows;
    meanOut[ch] = mean[ch];
    varOut[ch] = static_cast<float>(var);
    scale[ch] = static_cast<float>(gamma[ch] / std::sqrt(var + eps));
    shift[ch] = beta[ch] - mean[ch] * scale[ch];
  }
  const float* sc = scale.data();
  const float* sh = shift.data();
#pragma omp parallel for schedule(static) if (s.rows * C >= kParallelGrain)
  for (int64_t r = 0; r < s.rows; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    for (int64_t ch = 0; ch < C; ++ch) yr[ch] = xr[ch] * sc[ch] + sh[ch];
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
  const int64_t C = s.c;

  std::vector<float> invstd(C);
  for (int64_t ch = 0; ch < C; ++ch) invstd[ch] = static_cast<float>(1.0 / std::sqrt(variance[ch] + eps));
  const float* is = invstd.data();
  // sums[0] = sum(dy), sums[1] = sum(dy * xhat)
  std::vector<double> sums[2];
  channelSums<2>(s, sums, [&](int64_t r, std::vector<double>* acc) {
    const float* xr = x + r * C;
    const float* gr = dy + r * C;
    double* a0 = acc[0].data();
    double* a1 = acc[1].data();
    for (int64_t ch = 0; ch < C; ++ch) {
      a0[ch] += gr[ch];
      a1[ch] += gr[ch] * ((xr[ch] - mean[ch]) * is[ch]);
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
    for (int64_t ch = 0; ch < C; ++ch) {
      float xhat = (xr[ch] - mean[ch]) * is[ch];
      dr[ch] = kk[ch] * (gr[ch] - md[ch] - xhat * mdx[ch]);
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
