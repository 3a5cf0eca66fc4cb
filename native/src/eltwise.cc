// Element-wise kernels: unary maps, binary ops with numpy broadcasting, AddN,
// and softmax over the last axis. Each op is a tiny functor; one template per
// kind of loop instantiates it, so every op gets the same vectorised,
// OpenMP-split loops.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <initializer_list>

#include "common.h"

namespace selfsup {

namespace {

// exp(x) = 2^n * e^r with |r| <= ln2/2 (Cody-Waite split of ln2) and a Cephes
// polynomial for e^r: about 1 ulp. libm's expf is accurate too, but only
// vectorises under -ffast-math; this inlines into vector loops.
inline float fastExp(float x) {
  float c = x < -104.f ? -104.f : x;  // below this e^x rounds to 0
  c = c > 88.7228394f ? 88.7228394f : c;
  c = c == c ? c : 0.f;               // keeps the int conversion defined for NaN
  float n = (c * 1.44269504f + 12582912.f) - 12582912.f;  // round to nearest
  float r = c - n * 0.693359375f + n * 2.12194440e-4f;
  float p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
             1.6666665459e-1f) * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  // 2^n in two halves, so that n from -150 to 128 needs no denormal or infinite scale.
  int32_t ni = static_cast<int32_t>(n), h = ni >> 1;
  int32_t b1 = (h + 127) << 23, b2 = (ni - h + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, 4);
  std::memcpy(&s2, &b2, 4);
  float y = p * s1 * s2;
  y = x > 88.7228394f ? INFINITY : y;
  return x == x ? y : x;
}

// Cephes tanhf: an odd polynomial near 0, where 1 - 2/(e^2x + 1) would cancel.
inline float fastTanh(float x) {
  float a = x < 0.f ? -x : x;
  float big = 1.f - 2.f / (fastExp(a + a) + 1.f);
  big = x < 0.f ? -big : big;
  float z = x * x;
  float small =
      ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z -
       3.33332819422e-1f) * z * x + x;
  return a < 0.625f ? small : big;
}

// Unary ops; `a` is the op's attribute (Step's and LeakyRelu's alpha). NaN
// passes through every op, as it does in tfjs-cpu.
struct Relu { float operator()(float v, float) const { return v < 0.f ? 0.f : v; } };
struct Relu6 { float operator()(float v, float) const { return v < 0.f ? 0.f : (v > 6.f ? 6.f : v); } };
struct LeakyRelu { float operator()(float v, float a) const { return v < 0.f ? a * v : v; } };
struct Elu { float operator()(float v, float) const { return v >= 0.f ? v : fastExp(v) - 1.f; } };
struct Step { float operator()(float v, float a) const { return v > 0.f ? 1.f : (v == v ? a : v); } };
struct Exp { float operator()(float v, float) const { return fastExp(v); } };
struct Log { float operator()(float v, float) const { return std::log(v); } };
struct Sqrt { float operator()(float v, float) const { return std::sqrt(v); } };
struct Rsqrt { float operator()(float v, float) const { return 1.f / std::sqrt(v); } };
struct Square { float operator()(float v, float) const { return v * v; } };
struct Abs { float operator()(float v, float) const { return std::fabs(v); } };
struct Neg { float operator()(float v, float) const { return -v; } };
struct Reciprocal { float operator()(float v, float) const { return 1.f / v; } };
struct Sigmoid { float operator()(float v, float) const { return 1.f / (1.f + fastExp(-v)); } };
struct Tanh { float operator()(float v, float) const { return fastTanh(v); } };

// Binary ops. Maximum/Minimum propagate NaN from either side, like Math.max.
struct Add { float operator()(float a, float b) const { return a + b; } };
struct Sub { float operator()(float a, float b) const { return a - b; } };
struct Mul { float operator()(float a, float b) const { return a * b; } };
struct Div { float operator()(float a, float b) const { return a / b; } };
struct Max { float operator()(float a, float b) const { return (a > b || a != a) ? a : b; } };
struct Min { float operator()(float a, float b) const { return (a < b || a != a) ? a : b; } };
struct SquaredDiff { float operator()(float a, float b) const { return (a - b) * (a - b); } };
// EluGrad's inputs are (dy, y): dy where y >= 0, else dy * (y + 1).
// ReluGrad's inputs are (dy, x): one pass instead of tfjs's step, cast and multiply.
struct ReluGrad { float operator()(float dy, float x) const { return x > 0.f ? dy : 0.f; } };
struct EluGrad { float operator()(float dy, float y) const { return y >= 0.f ? dy : dy * (y + 1.f); } };

template <class F>
void runUnary(const float* x, float* y, int64_t n, float alpha) {
  F f;
  parallelRanges(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = f(x[i], alpha);
  });
}

using UnaryRun = void (*)(const float*, float*, int64_t, float);
const std::pair<const char*, UnaryRun> kUnary[] = {
    {"relu", runUnary<Relu>},   {"relu6", runUnary<Relu6>},   {"leakyRelu", runUnary<LeakyRelu>},
    {"elu", runUnary<Elu>},     {"step", runUnary<Step>},     {"exp", runUnary<Exp>},
    {"log", runUnary<Log>},     {"sqrt", runUnary<Sqrt>},     {"rsqrt", runUnary<Rsqrt>},
    {"square", runUnary<Square>}, {"abs", runUnary<Abs>},     {"neg", runUnary<Neg>},
    {"reciprocal", runUnary<Reciprocal>}, {"sigmoid", runUnary<Sigmoid>}, {"tanh", runUnary<Tanh>},
};

// a and b broadcast to `dims` (strides 0 where broadcast), after collapsing:
// same shapes become one dimension, [N,H,W,C] + [C] becomes [NHW, C], so the
// common cases run the inner loop over long rows.
struct Broadcast {
  std::vector<int64_t> dims, sa, sb;

  Broadcast(Napi::Env env, const std::vector<int64_t>& aShape, const std::vector<int64_t>& bShape,
            const std::vector<int64_t>& yShape)
      : dims(yShape), sa(yShape.size(), 0), sb(yShape.size(), 0) {
    if (!strides(aShape, sa) || !strides(bShape, sb)) throw Napi::RangeError::New(env, "binary: shapes do not broadcast");
    collapseDims(dims, {&sa, &sb});
    if (dims.empty()) dims = {1}, sa = {0}, sb = {0};
  }

  bool strides(const std::vector<int64_t>& shape, std::vector<int64_t>& s) const {
    int64_t offset = static_cast<int64_t>(dims.size()) - static_cast<int64_t>(shape.size()), stride = 1;
    if (offset < 0) return false;
    for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
      if (shape[i] != 1 && shape[i] != dims[i + offset]) return false;
      s[i + offset] = shape[i] == 1 ? 0 : stride;
      stride *= shape[i];
    }
    return true;
  }
};

// One row of the innermost dimension, with each operand either walked or held.
template <class F>
inline void binaryRow(F f, const float* a, bool aWalks, const float* b, bool bWalks, float* y, int64_t n) {
  if (aWalks && bWalks) {
    for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], b[i]);
  } else if (aWalks) {
    float bv = *b;
    for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], bv);
  } else if (bWalks) {
    float av = *a;
    for (int64_t i = 0; i < n; ++i) y[i] = f(av, b[i]);
  } else {
    float v = f(*a, *b);
    for (int64_t i = 0; i < n; ++i) y[i] = v;
  }
}

template <class F>
void runBinary(const Broadcast& s, const float* a, const float* b, float* y) {
  F f;
  const int64_t k = static_cast<int64_t>(s.dims.size()), inner = s.dims[k - 1];
  const bool aWalks = s.sa[k - 1] != 0, bWalks = s.sb[k - 1] != 0;
  // Each thread takes a contiguous range of output elements and walks it row by row.
  parallelRanges(product(s.dims), 1, [&](int64_t begin, int64_t end) {
    int64_t row = begin / inner, col = begin % inner;
    for (int64_t at = begin; at < end; ++row, col = 0) {
      int64_t oa = 0, ob = 0;
      for (int64_t d = k - 2, rest = row; d >= 0; --d) {
        int64_t i = rest % s.dims[d];
        rest /= s.dims[d];
        oa += i * s.sa[d];
        ob += i * s.sb[d];
      }
      int64_t n = std::min(inner - col, end - at);
      binaryRow(f, a + oa + (aWalks ? col : 0), aWalks, b + ob + (bWalks ? col : 0), bWalks, y + at, n);
      at += n;
    }
  });
}

using BinaryRun = void (*)(const Broadcast&, const float*, const float*, float*);
const std::pair<const char*, BinaryRun> kBinary[] = {
    {"add", runBinary<Add>}, {"sub", runBinary<Sub>}, {"mul", runBinary<Mul>},
    {"div", runBinary<Div>}, {"max", runBinary<Max>}, {"min", runBinary<Min>},
    {"squaredDifference", runBinary<SquaredDiff>}, {"eluGrad", runBinary<EluGrad>},
    {"reluGrad", runBinary<ReluGrad>},
};

template <class Table, size_t N>
Napi::Value namesOf(Napi::Env env, const Table (&table)[N]) {
  auto out = Napi::Array::New(env, N);
  for (size_t i = 0; i < N; ++i) out.Set(static_cast<uint32_t>(i), table[i].first);
  return out;
}

template <class Table, size_t N>
const Table& entry(const Napi::Value& op, const Table (&table)[N]) {
  int64_t i = op.As<Napi::Number>().Int64Value();
  if (i < 0 || i >= static_cast<int64_t>(N)) throw Napi::RangeError::New(op.Env(), "unknown op code");
  return table[i];
}

// unary(op, x, y, alpha)
Napi::Value Unary(const Napi::CallbackInfo& info) {
  auto run = entry(info[0], kUnary).second;
  float* x = floatData(info[1], "x");
  int64_t n = static_cast<int64_t>(floatLength(info[1]));
  float* y = floatsOfLength(info[2], n, "y");
  run(x, y, n, info[3].As<Napi::Number>().FloatValue());
  return info.Env().Undefined();
}

// binary(op, a, aShape, b, bShape, y, yShape)
Napi::Value Binary(const Napi::CallbackInfo& info) {
  auto run = entry(info[0], kBinary).second;
  auto aShape = intList(info[2], "aShape"), bShape = intList(info[4], "bShape"), yShape = intList(info[6], "yShape");
  float* a = floatsOfLength(info[1], product(aShape), "a");
  float* b = floatsOfLength(info[3], product(bShape), "b");
  float* y = floatsOfLength(info[5], product(yShape), "y");
  if (product(yShape) == 0) return info.Env().Undefined();
  run(Broadcast(info.Env(), aShape, bShape, yShape), a, b, y);
  return info.Env().Undefined();
}

// addN(xs, y): y = xs[0] + xs[1] + ..., summed left to right like tfjs-cpu.
Napi::Value AddN(const Napi::CallbackInfo& info) {
  auto list = info[0].As<Napi::Array>();
  int64_t n = static_cast<int64_t>(floatLength(info[1]));
  float* y = floatData(info[1], "y");
  std::vector<const float*> xs(list.Length());
  for (uint32_t k = 0; k < list.Length(); ++k) xs[k] = floatsOfLength(list.Get(k), n, "addN input");
  if (xs.empty()) throw Napi::RangeError::New(info.Env(), "addN needs at least one input");
  // Blocks small enough that y stays in L1 while every input is added in.
  constexpr int64_t kBlock = 2048;
  parallelRanges(n, static_cast<int64_t>(xs.size()), [&](int64_t begin, int64_t end) {
    for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
      int64_t b1 = std::min(end, b0 + kBlock);
      std::memcpy(y + b0, xs[0] + b0, (b1 - b0) * sizeof(float));
      for (size_t k = 1; k < xs.size(); ++k) {
        const float* x = xs[k];
        for (int64_t i = b0; i < b1; ++i) y[i] += x[i];
      }
    }
  });
  return info.Env().Undefined();
}

// softmax(x, y, rows, cols, log): softmax or log-softmax of each row.
Napi::Value Softmax(const Napi::CallbackInfo& info) {
  int64_t rows = info[2].As<Napi::Number>().Int64Value(), cols = info[3].As<Napi::Number>().Int64Value();
  bool log = info[4].ToBoolean();
  const float* x = floatsOfLength(info[0], rows * cols, "x");
  float* y = floatsOfLength(info[1], rows * cols, "y");
  parallelRanges(rows, cols, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * cols;
      float* yr = y + r * cols;
      float m = -INFINITY;
#pragma omp simd reduction(max : m)
      for (int64_t i = 0; i < cols; ++i) m = xr[i] > m ? xr[i] : m;
      double sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < cols; ++i) {
        yr[i] = fastExp(xr[i] - m);
        sum += yr[i];
      }
      if (log) {
        float shift = m + static_cast<float>(std::log(sum));
        for (int64_t i = 0; i < cols; ++i) yr[i] = xr[i] - shift;
      } else {
        float scale = static_cast<float>(1.0 / sum);
        for (int64_t i = 0; i < cols; ++i) yr[i] *= scale;
      }
    }
  });
  return info.Env().Undefined();
}

// sgdMomentum(p, g, buf, pOut, bufOut, lr, momentum, weightDecay, nesterov):
// PyTorch's SGD step for one parameter in one pass over its four arrays
//   g' = g + wd p;  b = mu buf + g';  p' = p - lr (nesterov ? g' + mu b : b)
// instead of the five or six element-wise ops (each a full pass) of the composite.
Napi::Value SgdMomentum(const Napi::CallbackInfo& info) {
  int64_t n = static_cast<int64_t>(floatLength(info[0]));
  const float* p = floatData(info[0], "p");
  const float* g = floatsOfLength(info[1], n, "g");
  const float* buf = floatsOfLength(info[2], n, "buf");
  float* pOut = floatsOfLength(info[3], n, "pOut");
  float* bufOut = floatsOfLength(info[4], n, "bufOut");
  float lr = info[5].As<Napi::Number>().FloatValue();
  float mu = info[6].As<Napi::Number>().FloatValue();
  float wd = info[7].As<Napi::Number>().FloatValue();
  bool nesterov = info[8].ToBoolean();
  parallelRanges(n, 1, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      float gi = g[i] + wd * p[i];
      float b = mu * buf[i] + gi;
      bufOut[i] = b;
      pOut[i] = p[i] - lr * (nesterov ? gi + mu * b : b);
    }
  });
  return info.Env().Undefined();
}

// firstNonFinite(xs): the index of the first array that holds a NaN or an
// infinity, or -1. The trainer checks every gradient each step; one call
// replaces three tfjs ops per tensor (x - x, sum, add), most of it dispatch.
// The test is on the bits (exponent all ones), which no compiler flag folds away.
Napi::Value FirstNonFinite(const Napi::CallbackInfo& info) {
  auto list = info[0].As<Napi::Array>();
  for (uint32_t k = 0; k < list.Length(); ++k) {
    Napi::Value v = list.Get(k);
    const uint32_t* bits = reinterpret_cast<const uint32_t*>(floatData(v, "firstNonFinite input"));
    int64_t n = static_cast<int64_t>(floatLength(v));
    std::atomic<bool> bad{false};
    parallelRanges(n, 1, [&](int64_t begin, int64_t end) {
      uint32_t any = 0;
#pragma omp simd reduction(| : any)
      for (int64_t i = begin; i < end; ++i) any |= static_cast<uint32_t>((bits[i] & 0x7f800000u) == 0x7f800000u);
      if (any) bad.store(true, std::memory_order_relaxed);
    });
    if (bad.load()) return Napi::Number::New(info.Env(), k);
  }
  return Napi::Number::New(info.Env(), -1);
}

// axpby(xs, ys, outs, a, b): outs[k] = a xs[k] + b ys[k] for every k, in one
// call: an EMA update of a whole network (MoCo's key encoder, BYOL's target)
// instead of three tfjs ops per tensor.
Napi::Value Axpby(const Napi::CallbackInfo& info) {
  auto xs = info[0].As<Napi::Array>(), ys = info[1].As<Napi::Array>(), outs = info[2].As<Napi::Array>();
  if (ys.Length() != xs.Length() || outs.Length() != xs.Length()) throw Napi::RangeError::New(info.Env(), "axpby: xs, ys and outs must be lists of one length");
  float a = info[3].As<Napi::Number>().FloatValue(), b = info[4].As<Napi::Number>().FloatValue();
  for (uint32_t k = 0; k < xs.Length(); ++k) {
    Napi::Value xv = xs.Get(k);
    int64_t n = static_cast<int64_t>(floatLength(xv));
    const float* x = floatData(xv, "axpby x");
    const float* y = floatsOfLength(ys.Get(k), n, "axpby y");
    float* out = floatsOfLength(outs.Get(k), n, "axpby out");
    parallelRanges(n, 1, [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) out[i] = a * x[i] + b * y[i];
    });
  }
  return info.Env().Undefined();
}

}  // namespace

void InitEltwise(Napi::Env env, Napi::Object exports) {
  exports.Set("unaryOps", namesOf(env, kUnary));
  exports.Set("binaryOps", namesOf(env, kBinary));
  exports.Set("unary", Napi::Function::New(env, Unary));
  exports.Set("binary", Napi::Function::New(env, Binary));
  exports.Set("addN", Napi::Function::New(env, AddN));
  exports.Set("softmax", Napi::Function::New(env, Softmax));
  exports.Set("sgdMomentum", Napi::Function::New(env, SgdMomentum));
  exports.Set("firstNonFinite", Napi::Function::New(env, FirstNonFinite));
  exports.Set("axpby", Napi::Function::New(env, Axpby));
}

}  // namespace selfsup
