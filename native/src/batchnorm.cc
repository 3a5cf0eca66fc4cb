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
#include <cstring>

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

// sums[0][ch], sums[1][ch] = two quantities summed over rows, per channel.
// Rows are split across threads in blocks of kBlockRows; each block is summed
// in float and flushed into the thread's double partials. Float accumulators
// vectorise twice as wide and need no conversions (the stats pass ran 2-3x
// faster on warm data); a block of 64 rows keeps their rounding near float's
// epsilon, and the double partials keep long reductions (rows = N*H*W) accurate.
//
// rowSums(r, acc) adds row r into the float arrays acc[0], acc[1]. Where C is
// a multiple of 16, chunkSums(r, ch, a0, a1) instead adds channels ch..ch+15
// of row r into two registers, and a block's sums never leave registers
// (chunks of up to 128 channels): through memory, every row's load-add-store
// chain on the same 16 floats set the pace at C = 16, 3.3 ms for a 64 MB
// stats pass where the registers take 1.0 ms.
constexpr int64_t kBlockRows = 64;
constexpr int kMaxChunkVectors = 8;

typedef float Vec16 __attribute__((vector_size(64)));
inline Vec16 load16(const float* p) {
  Vec16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store16(float* p, Vec16 v) { std::memcpy(p, &v, sizeof v); }

template <int CB, typename F>
void chunkBlockSums(int64_t r0, int64_t r1, int64_t c0, float* out0, float* out1, F& chunkSums) {
  Vec16 a0[CB] = {}, a1[CB] = {};
  for (int64_t r = r0; r < r1; ++r)
    for (int j = 0; j < CB; ++j) chunkSums(r, c0 + 16 * j, a0[j], a1[j]);
  for (int j = 0; j < CB; ++j) {
    store16(out0 + c0 + 16 * j, a0[j]);
    store16(out1 + c0 + 16 * j, a1[j]);
  }
}

template <typename F>
void blockSumsInRegisters(int64_t r0, int64_t r1, int64_t C, float* out0, float* out1, F& chunkSums) {
  for (int64_t c0 = 0; c0 < C; c0 += 16 * kMaxChunkVectors) {
    switch (std::min<int64_t>(kMaxChunkVectors, (C - c0) / 16)) {
      case 1: chunkBlockSums<1>(r0, r1, c0, out0, out1, chunkSums); break;
      case 2: chunkBlockSums<2>(r0, r1, c0, out0, out1, chunkSums); break;
      case 3: chunkBlockSums<3>(r0, r1, c0, out0, out1, chunkSums); break;
      case 4: chunkBlockSums<4>(r0, r1, c0, out0, out1, chunkSums); break;
      case 5: chunkBlockSums<5>(r0, r1, c0, out0, out1, chunkSums); break;
      case 6: chunkBlockSums<6>(r0, r1, c0, out0, out1, chunkSums); break;
      case 7: chunkBlockSums<7>(r0, r1, c0, out0, out1, chunkSums); break;
      default: chunkBlockSums<8>(r0, r1, c0, out0, out1, chunkSums); break;
    }
  }
}

template <typename RowSums, typename ChunkSums>
void channelSums(const Rows& s, std::vector<double>* sums, RowSums rowSums, ChunkSums chunkSums) {
  const int threads = s.rows * s.c >= kParallelGrain ? omp_get_max_threads() : 1;
  const bool inRegisters = s.c % 16 == 0;
  std::vector<std::vector<double>> partial(threads * 2, std::vector<double>(s.c, 0.0));
  const int64_t blocks = (s.rows + kBlockRows - 1) / kBlockRows;
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num();
    std::vector<float> block(2 * s.c);
    float* acc[2] = {block.data(), block.data() + s.c};
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t begin = b * kBlockRows, end = std::min(s.rows, (b + 1) * kBlockRows);
      if (inRegisters) {
        blockSumsInRegisters(begin, end, s.c, acc[0], acc[1], chunkSums);
      } else {
        std::fill(block.begin(), block.end(), 0.f);
        for (int64_t r = begin; r < end; ++r) rowSums(r, acc);
      }
      for (int k = 0; k < 2; ++k) {
        double* mine = partial[t * 2 + k].data();
        for (int64_t ch = 0; ch < s.c; ++ch) mine[ch] += acc[k][ch];
      }
    }
  }
  for (int k = 0; k < 2; ++k) {
    sums[k].assign(s.c, 0.0);
    for (int t = 0; t < threads; ++t)
      for (int64_t ch = 0; ch < s.c; ++ch) sums[k][ch] += partial[t * 2 + k][ch];
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
  channelSums(
      s, sums,
      [&](int64_t r, float** acc) {
        const float* xr = x + r * C;
        float* a0 = acc[0];
        float* a1 = acc[1];
#pragma omp simd
        for (int64_t ch = 0; ch < C; ++ch) {
          float d = xr[ch] - k[ch];
          a0[ch] += d;
          a1[ch] += d * d;
        }
      },
      [&](int64_t r, int64_t ch, Vec16& a0, Vec16& a1) {
        Vec16 d = load16(x + r * C + ch) - load16(k + ch);
        a0 += d;
        a1 += d * d;
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
  if (C % 16 == 0) {
    // One pass per vector for the affine map, residual and ReLU (with the
    // row loops below, y is stored and reloaded between the three).
    const Vec16 zero = {};
#pragma omp parallel for schedule(static) if (s.rows * C >= kParallelGrain)
    for (int64_t r = 0; r < s.rows; ++r) {
      for (int64_t ch = 0; ch < C; ch += 16) {
        const int64_t i = r * C + ch;
        Vec16 v = load16(x + i) * load16(sc + ch) + load16(sh + ch);
        if (residual) v += load16(residual + i);
        if (relu) v = v > zero ? v : zero;
        store16(y + i, v);
      }
    }
    return info.Env().Undefined();
  }
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
  const Vec16 zero = {};
  channelSums(
      s, sums,
      [&](int64_t r, float** acc) {
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
      },
      [&](int64_t r, int64_t ch, Vec16& a0, Vec16& a1) {
        const int64_t i = r * C + ch;
        Vec16 g = load16(dy + i);
        if (y) g = load16(y + i) > zero ? g : zero;
        a0 += g;
        a1 += g * ((load16(x + i) - load16(mean + ch)) * load16(is + ch));
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
  if (C % 16 == 0) {
    // dx = k * g + b * x + c per channel, 16 channels a vector: the same
    // formula with the per-channel terms folded, one select for the mask.
    std::vector<float> b(C), c(C);
    for (int64_t ch = 0; ch < C; ++ch) {
      b[ch] = -kk[ch] * is[ch] * mdx[ch];
      c[ch] = -kk[ch] * md[ch] - b[ch] * mean[ch];
    }
#pragma omp parallel for schedule(static) if (s.rows * C >= kParallelGrain)
    for (int64_t r = 0; r < s.rows; ++r) {
      for (int64_t ch = 0; ch < C; ch += 16) {
        const int64_t i = r * C + ch;
        Vec16 g = load16(dy + i);
        if (y) g = load16(y + i) > zero ? g : zero;
        if (dresidual) store16(dresidual + i, g);
        store16(dx + i, load16(kk + ch) * g + load16(&b[ch]) * load16(x + i) + load16(&c[ch]));
      }
    }
    return info.Env().Undefined();
  }
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
