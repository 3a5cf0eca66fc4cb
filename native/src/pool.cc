// Max and average pooling on NHWC data. Channels are innermost, so every
// window step is a contiguous vector operation over C. Average pooling divides
// by the number of in-bounds pixels (padding excluded), in both directions.
#include <cfloat>

#include "common.h"

namespace selfsup {
namespace {

struct PoolShape {
  int64_t n, h, w, c, kh, kw, oh, ow, sh, sw, pt, pl;
  explicit PoolShape(const std::vector<int64_t>& d) {
    if (d.size() != 14) throw std::invalid_argument("pool: dims must have 14 entries");
    n = d[0]; h = d[1]; w = d[2]; c = d[3]; kh = d[4]; kw = d[5]; oh = d[6]; ow = d[7];
    sh = d[8]; sw = d[9]; pt = d[10]; pl = d[11];
  }
  // The in-bounds window rows/cols of output pixel (oy, ox).
  void window(int64_t oy, int64_t ox, int64_t& y0, int64_t& y1, int64_t& x0, int64_t& x1) const {
    y0 = std::max<int64_t>(oy * sh - pt, 0);
    y1 = std::min<int64_t>(oy * sh - pt + kh, h);
    x0 = std::max<int64_t>(ox * sw - pl, 0);
    x1 = std::min<int64_t>(ox * sw - pl + kw, w);
  }
  int64_t inSize() const { return n * h * w * c; }
  int64_t outSize() const { return n * oh * ow * c; }
  int64_t work() const { return n * oh * ow * c * kh * kw; }
};

// Calls f(b, oy, ox) for every output pixel, one output row per task.
template <typename F>
void forEachOutput(const PoolShape& s, F f) {
#pragma omp parallel for schedule(static) if (s.work() >= kParallelGrain)
  for (int64_t row = 0; row < s.n * s.oh; ++row) {
    int64_t b = row / s.oh, oy = row % s.oh;
    for (int64_t ox = 0; ox < s.ow; ++ox) f(b, oy, ox);
  }
}

// One forward template for both poolings: Op says how a window starts,
// takes in a pixel, and ends given its in-bounds pixel count.
struct MaxOp {
  static float start() { return -FLT_MAX; }
  static float take(float acc, float v) { return std::max(acc, v); }
  static float scale(int64_t) { return 1.f; }
};
struct AvgOp {
  static float start() { return 0.f; }
  static float take(float acc, float v) { return acc + v; }
  static float scale(int64_t count) { return 1.f / std::max<int64_t>(count, 1); }
};

template <typename Op>
Napi::Value PoolForward(const Napi::CallbackInfo& info) {
  PoolShape s(intList(info[2], "dims"));
  const float* x = floatsOfLength(info[0], s.inSize(), "x");
  float* y = floatsOfLength(info[1], s.outSize(), "y");
  forEachOutput(s, [&](int64_t b, int64_t oy, int64_t ox) {
    int64_t y0, y1, x0, x1;
    s.window(oy, ox, y0, y1, x0, x1);
    float* out = y + ((b * s.oh + oy) * s.ow + ox) * s.c;
    for (int64_t ch = 0; ch < s.c; ++ch) out[ch] = Op::start();
    for (int64_t iy = y0; iy < y1; ++iy)
      for (int64_t ix = x0; ix < x1; ++ix) {
        const float* in = x + ((b * s.h + iy) * s.w + ix) * s.c;
        for (int64_t ch = 0; ch < s.c; ++ch) out[ch] = Op::take(out[ch], in[ch]);
      }
    float k = Op::scale((y1 - y0) * (x1 - x0));
    if (k != 1.f)
      for (int64_t ch = 0; ch < s.c; ++ch) out[ch] *= k;
  });
  return info.Env().Undefined();
}

// dx is zeroed by the caller. Output rows of one image can share input pixels,
// so threads split over images to keep the scatter race-free.
Napi::Value MaxPoolBackward(const Napi::CallbackInfo& info) {
  PoolShape s(intList(info[3], "dims"));
  const float* x = floatsOfLength(info[0], s.inSize(), "x");
  const float* dy = floatsOfLength(info[1], s.outSize(), "dy");
  float* dx = floatsOfLength(info[2], s.inSize(), "dx");
#pragma omp parallel for schedule(static) if (s.work() >= kParallelGrain)
  for (int64_t b = 0; b < s.n; ++b) {
    std::vector<int64_t> argmax(s.c);
    for (int64_t oy = 0; oy < s.oh; ++oy)
      for (int64_t ox = 0; ox < s.ow; ++ox) {
        int64_t y0, y1, x0, x1;
        s.window(oy, ox, y0, y1, x0, x1);
        std::vector<float> best(s.c, -FLT_MAX);
        // The first maximum in window order wins ties, as in tfjs and TensorFlow.
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = x0; ix < x1; ++ix) {
            int64_t base = ((b * s.h + iy) * s.w + ix) * s.c;
            for (int64_t ch = 0; ch < s.c; ++ch)
              if (x[base + ch] > best[ch]) {
                best[ch] = x[base + ch];
                argmax[ch] = base + ch;
              }
          }
        const float* g = dy + ((b * s.oh + oy) * s.ow + ox) * s.c;
        for (int64_t ch = 0; ch < s.c; ++ch)
          if (best[ch] > -FLT_MAX) dx[argmax[ch]] += g[ch];
      }
  }
  return info.Env().Undefined();
}

// dx is zeroed by the caller; threads split over images as in MaxPoolBackward.
Napi::Value AvgPoolBackward(const Napi::CallbackInfo& info) {
  PoolShape s(intList(info[2], "dims"));
  const float* dy = floatsOfLength(info[0], s.outSize(), "dy");
  float* dx = floatsOfLength(info[1], s.inSize(), "dx");
#pragma omp parallel for schedule(static) if (s.work() >= kParallelGrain)
  for (int64_t b = 0; b < s.n; ++b)
    for (int64_t oy = 0; oy < s.oh; ++oy)
      for (int64_t ox = 0; ox < s.ow; ++ox) {
        int64_t y0, y1, x0, x1;
        s.window(oy, ox, y0, y1, x0, x1);
        float inv = 1.f / std::max<int64_t>((y1 - y0) * (x1 - x0), 1);
        const float* g = dy + ((b * s.oh + oy) * s.ow + ox) * s.c;
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = x0; ix < x1; ++ix) {
            float* out = dx + ((b * s.h + iy) * s.w + ix) * s.c;
            for (int64_t ch = 0; ch < s.c; ++ch) out[ch] += g[ch] * inv;
          }
      }
  return info.Env().Undefined();
}

}  // namespace

void InitPool(Napi::Env env, Napi::Object exports) {
  exports.Set("maxPool", Napi::Function::New(env, PoolForward<MaxOp>));
  exports.Set("maxPoolBackward", Napi::Function::New(env, MaxPoolBackward));
  exports.Set("avgPool", Napi::Function::New(env, PoolForward<AvgOp>));
  exports.Set("avgPoolBackward", Napi::Function::New(env, AvgPoolBackward));
}

}  // namespace selfsup
