// RoIAlign (Mask R-CNN, He et al. 2017, §3) on NHWC features, with detectron2's
// ROIAlignV2 conventions (aligned: boxes shift by -0.5 px so that pixel centres
// sit at integer + 0.5) and torchvision's sampling: each output bin averages a
// grid of bilinear samples at sub-bin centres, ceil(roi / pooled) per side
// when the sampling ratio is 0.
//
// Every RoI first turns into taps: for each bin the (pixel, weight) pairs of its
// samples' four bilinear corners, the weight already divided by the sample
// count. Forward and backward are then fused multiply-adds of a weight with C
// contiguous floats. The coordinate arithmetic is double, as the TypeScript
// composite and host versions do it, so all three agree on which samples fall
// inside the map.
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "common.h"

namespace selfsup {
namespace {

struct RoiShape {
  int64_t n, h, w, c, r, ph, pw, samplingRatio;
  bool aligned;
  double scale;
  RoiShape(const std::vector<int64_t>& d, double spatialScale) {
    if (d.size() != 9) throw std::invalid_argument("roiAlign: dims must be [N,H,W,C, R,PH,PW, samplingRatio, aligned]");
    n = d[0]; h = d[1]; w = d[2]; c = d[3]; r = d[4]; ph = d[5]; pw = d[6]; samplingRatio = d[7];
    aligned = d[8] != 0;
    scale = spatialScale;
    if (n < 0 || h < 0 || w < 0 || c < 0 || r < 0 || ph < 1 || pw < 1 || samplingRatio < 0)
      throw std::invalid_argument("roiAlign: negative dimension, or pooled size < 1, or negative sampling ratio");
  }
  int64_t featureSize() const { return n * h * w * c; }
  int64_t outputSize() const { return r * ph * pw * c; }
  int64_t cells() const { return ph * pw; }
};

struct Tap {
  int64_t pixel;  // index into the [N*H*W] pixels of the feature map
  float weight;
};

// One RoI's taps, bin by bin: bin k owns taps[start[k] .. start[k+1]).
struct RoiTaps {
  std::vector<Tap> taps;
  std::vector<int64_t> start;
};

int64_t batchIndexOf(const float* roi, int64_t n) {
  // torchvision truncates the float batch index; anything outside the batch would read foreign memory.
  double b = roi[0];
  if (!(b >= 0 && b < static_cast<double>(n))) {
    throw std::range_error("roiAlign: batch index " + std::to_string(b) + " is outside the batch of " + std::to_string(n));
  }
  return static_cast<int64_t>(b);
}

// One coordinate of a sample on one axis of length `size`: its two
// neighbouring pixels and their linear weights. A sample more than a pixel
// outside the map contributes nothing; coordinates in [-1, 0] clamp to the
// first pixel, and those past the last pixel centre to the last.
struct AxisTap {
  int64_t lo, hi;
  double wlo, whi;
  bool inside;
};

AxisTap axisTap(double v, int64_t size) {
  AxisTap t;
  t.inside = !(v < -1.0 || v > static_cast<double>(size));
  if (v <= 0) v = 0;
  t.lo = static_cast<int64_t>(v);
  if (t.lo >= size - 1) {
    t.lo = t.hi = size - 1;
    v = static_cast<double>(t.lo);
  } else {
    t.hi = t.lo + 1;
  }
  t.whi = v - t.lo;
  t.wlo = 1.0 - t.whi;
  return t;
}

// The box in feature-map pixels, with its sampling grid.
struct RoiGeometry {
  double x0, y0, binW, binH;
  int64_t gridW, gridH;
};

// fp-contract off (here and in sampleCoordinates): a fused a*b+c would round
// differently from the TypeScript side, which could move a sample across the
// map's edge or change an adaptive grid size.
__attribute__((optimize("fp-contract=off"))) RoiGeometry roiGeometry(const float* roi, const RoiShape& s) {
  double offset = s.aligned ? 0.5 : 0.0;
  RoiGeometry g;
  g.x0 = roi[1] * s.scale - offset;
  g.y0 = roi[2] * s.scale - offset;
  double roiW = roi[3] * s.scale - offset - g.x0, roiH = roi[4] * s.scale - offset - g.y0;
  // The legacy (unaligned) RoIAlign forces boxes to at least 1x1.
  if (!s.aligned) { roiW = std::max(roiW, 1.0); roiH = std::max(roiH, 1.0); }
  g.binW = roiW / s.pw;
  g.binH = roiH / s.ph;
  g.gridW = std::max<int64_t>(s.samplingRatio > 0 ? s.samplingRatio : static_cast<int64_t>(std::ceil(roiW / s.pw)), 0);
  g.gridH = std::max<int64_t>(s.samplingRatio > 0 ? s.samplingRatio : static_cast<int64_t>(std::ceil(roiH / s.ph)), 0);
  return g;
}

// Sub-bin centres along one axis: bin p's sample i sits at start + p bin + (i + 1/2) bin / grid.
__attribute__((optimize("fp-contract=off"))) void sampleCoordinates(double start, double bin, int64_t pooled, int64_t grid,
                                                                    int64_t size, std::vector<AxisTap>& out) {
  out.resize(pooled * grid);
  for (int64_t p = 0; p < pooled; ++p)
    for (int64_t i = 0; i < grid; ++i) out[p * grid + i] = axisTap(start + p * bin + ((i + 0.5) * bin) / grid, size);
}

// Bilinear sampling is separable, so each RoI needs its samples' rows and
// columns once; a sample's four taps are their products.
void computeTaps(const float* roi, const RoiShape& s, RoiTaps& out, std::vector<AxisTap>& rows, std::vector<AxisTap>& cols) {
  int64_t base = batchIndexOf(roi, s.n) * s.h * s.w;
  RoiGeometry g = roiGeometry(roi, s);
  sampleCoordinates(g.y0, g.binH, s.ph, g.gridH, s.h, rows);
  sampleCoordinates(g.x0, g.binW, s.pw, g.gridW, s.w, cols);
  double count = static_cast<double>(std::max<int64_t>(g.gridH * g.gridW, 1));
  out.taps.clear();
  out.taps.reserve(s.cells() * g.gridH * g.gridW * 4);
  out.start.assign(1, 0);
  for (int64_t py = 0; py < s.ph; ++py)
    for (int64_t px = 0; px < s.pw; ++px) {
      for (int64_t iy = 0; iy < g.gridH; ++iy) {
        const AxisTap& ty = rows[py * g.gridH + iy];
        if (!ty.inside) continue;
        for (int64_t ix = 0; ix < g.gridW; ++ix) {
          const AxisTap& tx = cols[px * g.gridW + ix];
          if (!tx.inside) continue;
          const int64_t pixels[4] = {ty.lo * s.w + tx.lo, ty.lo * s.w + tx.hi, ty.hi * s.w + tx.lo, ty.hi * s.w + tx.hi};
          const double weights[4] = {ty.wlo * tx.wlo, ty.wlo * tx.whi, ty.whi * tx.wlo, ty.whi * tx.whi};
          for (int k = 0; k < 4; ++k) {
            float w = static_cast<float>(weights[k] / count);
            if (w != 0.f) out.taps.push_back({base + pixels[k], w});
          }
        }
      }
      out.start.push_back(static_cast<int64_t>(out.taps.size()));
    }
}

void checkBatchIndices(const float* rois, const RoiShape& s) {
  for (int64_t i = 0; i < s.r; ++i) batchIndexOf(rois + i * 5, s.n);
}

// roiAlign(x, rois, y, dims, spatialScale): y [R,PH,PW,C] from x [N,H,W,C] and rois [R,5].
Napi::Value RoiAlignForward(const Napi::CallbackInfo& info) {
  RoiShape s(intList(info[3], "dims"), info[4].As<Napi::Number>().DoubleValue());
  const float* x = floatsOfLength(info[0], s.featureSize(), "x");
  const float* rois = floatsOfLength(info[1], s.r * 5, "rois");
  float* y = floatsOfLength(info[2], s.outputSize(), "y");
  checkBatchIndices(rois, s);
  const int64_t C = s.c;
  parallelRanges(s.r, s.cells() * C * 16, [&](int64_t begin, int64_t end) {
    RoiTaps t;
    std::vector<AxisTap> rows, cols;
    for (int64_t r = begin; r < end; ++r) {
      computeTaps(rois + r * 5, s, t, rows, cols);
      for (int64_t k = 0; k < s.cells(); ++k) {
        float* __restrict out = y + (r * s.cells() + k) * C;
        std::fill(out, out + C, 0.f);
        for (int64_t i = t.start[k]; i < t.start[k + 1]; ++i) {
          const float* __restrict in = x + t.taps[i].pixel * C;
          const float wt = t.taps[i].weight;
          for (int64_t ch = 0; ch < C; ++ch) out[ch] += wt * in[ch];
        }
      }
    }
  });
  return info.Env().Undefined();
}

// roiAlignBackward(dy, rois, dx, dims, spatialScale): dx (zeroed by the caller) += the
// transpose of the forward. Work splits into (image, channel block) tasks: a task
// owns its slab of dx and adds its image's RoIs in index order, so every element
// is summed in one fixed order whatever the number of threads, without
// per-thread copies of dx.
Napi::Value RoiAlignBackward(const Napi::CallbackInfo& info) {
  RoiShape s(intList(info[3], "dims"), info[4].As<Napi::Number>().DoubleValue());
  const float* dy = floatsOfLength(info[0], s.outputSize(), "dy");
  const float* rois = floatsOfLength(info[1], s.r * 5, "rois");
  float* dx = floatsOfLength(info[2], s.featureSize(), "dx");
  checkBatchIndices(rois, s);
  if (s.r == 0 || s.c == 0) return info.Env().Undefined();
  const int64_t C = s.c;

  std::vector<RoiTaps> taps(s.r);
  parallelRanges(s.r, s.cells() * 64, [&](int64_t begin, int64_t end) {
    std::vector<AxisTap> rows, cols;
    for (int64_t r = begin; r < end; ++r) computeTaps(rois + r * 5, s, taps[r], rows, cols);
  });
  std::vector<std::vector<int64_t>> byImage(s.n);
  for (int64_t r = 0; r < s.r; ++r) byImage[batchIndexOf(rois + r * 5, s.n)].push_back(r);

  // Enough channel blocks to give every thread work, none narrower than 16 floats.
  int64_t threads = omp_get_max_threads();
  int64_t blocks = std::min<int64_t>((2 * threads + s.n - 1) / std::max<int64_t>(s.n, 1), (C + 15) / 16);
  blocks = std::max<int64_t>(blocks, 1);
  int64_t blockC = (C + blocks - 1) / blocks;
  blockC = (blockC + 15) / 16 * 16;
  blocks = (C + blockC - 1) / blockC;
  int64_t work = s.outputSize() * 16;
#pragma omp parallel for schedule(dynamic) if (work >= kParallelGrain)
  for (int64_t task = 0; task < s.n * blocks; ++task) {
    int64_t b = task / blocks;
    int64_t c0 = (task % blocks) * blockC, c1 = std::min(C, c0 + blockC);
    for (int64_t r : byImage[b]) {
      const RoiTaps& t = taps[r];
      for (int64_t k = 0; k < s.cells(); ++k) {
        const float* __restrict g = dy + (r * s.cells() + k) * C;
        for (int64_t i = t.start[k]; i < t.start[k + 1]; ++i) {
          float* __restrict d = dx + t.taps[i].pixel * C;
          const float wt = t.taps[i].weight;
          for (int64_t ch = c0; ch < c1; ++ch) d[ch] += wt * g[ch];
        }
      }
    }
  }
  return info.Env().Undefined();
}

}  // namespace

void InitRoiAlign(Napi::Env env, Napi::Object exports) {
  exports.Set("roiAlign", Napi::Function::New(env, RoiAlignForward));
  exports.Set("roiAlignBackward", Napi::Function::New(env, RoiAlignBackward));
}

}  // namespace selfsup
