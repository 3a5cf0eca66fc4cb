// Reductions of x viewed as [outer, n, inner] over its middle axis: the caller
// collapses a contiguous block of reduced axes into n (global average pooling
// is [N, H*W, C]; a bias gradient is [1, N*H*W, C]) and transposes otherwise.
// Sums and products accumulate in double, like tfjs-cpu's JavaScript numbers,
// so that long reductions stay accurate.
#include <algorithm>
#include <cmath>
#include <functional>

#include "common.h"

namespace selfsup {

namespace {

struct Sum {
  using Acc = double;
  static Acc init() { return 0; }
  static Acc step(Acc a, float v) { return a + v; }
  static Acc merge(Acc a, Acc b) { return a + b; }
  static float finish(Acc a, int64_t) { return static_cast<float>(a); }
};
struct Mean : Sum {
  static float finish(Acc a, int64_t n) { return static_cast<float>(a / n); }
};
struct Prod {
  using Acc = double;
  static Acc init() { return 1; }
  static Acc step(Acc a, float v) { return a * v; }
  static Acc merge(Acc a, Acc b) { return a * b; }
  static float finish(Acc a, int64_t) { return static_cast<float>(a); }
};
// NaN wins, as in tfjs-cpu: once the accumulator is NaN no comparison replaces it.
struct Max {
  using Acc = float;
  static Acc init() { return -INFINITY; }
  static Acc step(Acc a, float v) { return (v > a || v != v) ? v : a; }
  static Acc merge(Acc a, Acc b) { return step(a, b); }
  static float finish(Acc a, int64_t) { return a; }
};
struct Min {
  using Acc = float;
  static Acc init() { return INFINITY; }
  static Acc step(Acc a, float v) { return (v < a || v != v) ? v : a; }
  static Acc merge(Acc a, Acc b) { return step(a, b); }
  static float finish(Acc a, int64_t) { return a; }
};

// A contiguous run, in independent lanes so that the loop vectorises without
// reassociating one accumulator (which -O3 may not do for floating point).
template <class Op>
typename Op::Acc reduceRun(const float* v, int64_t n) {
  constexpr int L = 16;
  typename Op::Acc lane[L], acc = Op::init();
  std::fill(lane, lane + L, Op::init());
  int64_t i = 0;
  for (; i + L <= n; i += L)
#pragma omp simd  // else GCC unrolls the lanes into branchy scalar code for Max/Min
    for (int j = 0; j < L; ++j) lane[j] = Op::step(lane[j], v[i + j]);
  for (; i < n; ++i) acc = Op::step(acc, v[i]);
  for (int j = 0; j < L; ++j) acc = Op::merge(acc, lane[j]);
  return acc;
}

// Work items are (outer index, block of up to kBlock inner columns); each
// accumulates rows r0..r1 into acc[0..width).
template <class Op>
struct Reduction {
  using Acc = typename Op::Acc;
  static constexpr int64_t kBlock = 256;
  const float* x;
  int64_t outer, n, inner;

  int64_t blocksPerRow() const { return (inner + kBlock - 1) / kBlock; }
  int64_t items() const { return outer * blocksPerRow(); }
  int64_t column(int64_t item) const { return item % blocksPerRow() * kBlock; }
  int64_t width(int64_t item) const { return std::min(kBlock, inner - column(item)); }

  void accumulate(int64_t item, int64_t r0, int64_t r1, Acc* acc) const {
    const float* base = x + item / blocksPerRow() * n * inner + column(item);
    if (inner == 1) {
      acc[0] = Op::merge(acc[0], reduceRun<Op>(base + r0, r1 - r0));
      return;
    }
    const int64_t w = width(item);
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = base + r * inner;
      for (int64_t i = 0; i < w; ++i) acc[i] = Op::step(acc[i], row[i]);
    }
  }

  // Output element of column c of item's block.
  int64_t outIndex(int64_t item, int64_t c) const { return item / blocksPerRow() * inner + column(item) + c; }

  void run(float* y) const {
    const int64_t total = items(), threads = omp_get_max_threads();
    const bool fewOutputs = total < threads && outer * n * inner > kParallelGrain;
    if (inner == 1 && !fewOutputs) {  // rows: the common last-axis case, kept free of block bookkeeping
      parallelRanges(outer, n, [&](int64_t begin, int64_t end) {
        for (int64_t o = begin; o < end; ++o) y[o] = Op::finish(reduceRun<Op>(x + o * n, n), n);
      });
      return;
    }
    if (!fewOutputs) {
      parallelRanges(total, n * std::min(kBlock, inner), [&](int64_t begin, int64_t end) {
        Acc acc[kBlock];
        for (int64_t item = begin; item < end; ++item) {
          std::fill(acc, acc + width(item), Op::init());
          accumulate(item, 0, n, acc);
          for (int64_t c = 0; c < width(item); ++c) y[outIndex(item, c)] = Op::finish(acc[c], n);
        }
      });
      return;
    }
    // Fewer items than threads (a bias gradient, a full sum): split the
    // reduced axis instead, and merge each thread's partial results.
    std::vector<Acc> partial(threads * total * kBlock, Op::init());
    parallelRanges(threads, n * inner / threads, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t)
        for (int64_t item = 0; item < total; ++item)
          accumulate(item, n * t / threads, n * (t + 1) / threads, &partial[(t * total + item) * kBlock]);
    });
    for (int64_t item = 0; item < total; ++item) {
      for (int64_t c = 0; c < width(item); ++c) {
        Acc acc = Op::init();
        for (int64_t t = 0; t < threads; ++t) acc = Op::merge(acc, partial[(t * total + item) * kBlock + c]);
        y[outIndex(item, c)] = Op::finish(acc, n);
      }
    }
  }
};

template <class Op>
void runReduce(const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
  Reduction<Op>{x, outer, n, inner}.run(y);
}

using ReduceRun = void (*)(const float*, float*, int64_t, int64_t, int64_t);
const std::pair<const char*, ReduceRun> kReduce[] = {
    {"sum", runReduce<Sum>}, {"mean", runReduce<Mean>}, {"prod", runReduce<Prod>},
    {"max", runReduce<Max>}, {"min", runReduce<Min>},
};

// reduce(op, x, y, outer, n, inner)
Napi::Value Reduce(const Napi::CallbackInfo& info) {
  int64_t op = info[0].As<Napi::Number>().Int64Value();
  if (op < 0 || op >= static_cast<int64_t>(std::size(kReduce))) throw Napi::RangeError::New(info.Env(), "unknown op code");
  int64_t outer = info[3].As<Napi::Number>().Int64Value(), n = info[4].As<Napi::Number>().Int64Value(),
          inner = info[5].As<Napi::Number>().Int64Value();
  if (outer < 0 || n < 1 || inner < 0) throw Napi::RangeError::New(info.Env(), "reduce: bad dimensions");
  const float* x = floatsOfLength(info[1], outer * n * inner, "x");
  float* y = floatsOfLength(info[2], outer * inner, "y");
  if (outer * inner > 0) kReduce[op].second(x, y, outer, n, inner);
  return info.Env().Undefined();
}

Napi::Value ReduceOps(const Napi::Env& env) {
  auto out = Napi::Array::New(env, std::size(kReduce));
  for (size_t i = 0; i < std::size(kReduce); ++i) out.Set(static_cast<uint32_t>(i), kReduce[i].first);
  return out;
}

}  // namespace

void InitReduce(Napi::Env env, Napi::Object exports) {
  exports.Set("reduceOps", ReduceOps(env));
  exports.Set("reduce", Napi::Function::New(env, Reduce));
}

}  // namespace selfsup
