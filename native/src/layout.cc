// Layout kernels: transpose, slice, pad, tile, concat and gatherRows. All but
// gatherRows are one strided copy (a block of `dims` read with one set of strides and written
// with another), so there is one copy routine with three loop shapes:
// contiguous rows, a cache-tiled 2-D transpose, and a plain strided walk.
#include <algorithm>
#include <cstring>
#include <functional>
#include <initializer_list>

#include "common.h"

namespace selfsup {

void collapseDims(std::vector<int64_t>& dims, std::initializer_list<std::vector<int64_t>*> strides) {
  std::vector<int64_t> outDims;
  std::vector<std::vector<int64_t>> outStrides(strides.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == 1) continue;
    bool merges = !outDims.empty();
    size_t k = 0;
    for (auto* s : strides) merges = merges && outStrides[k++].back() == (*s)[i] * dims[i];
    k = 0;
    if (merges) {
      outDims.back() *= dims[i];
      for (auto* s : strides) outStrides[k++].back() = (*s)[i];
    } else {
      outDims.push_back(dims[i]);
      for (auto* s : strides) outStrides[k++].push_back((*s)[i]);
    }
  }
  dims = outDims;
  size_t k = 0;
  for (auto* s : strides) *s = outStrides[k++];
}

namespace {

std::vector<int64_t> contiguousStrides(const std::vector<int64_t>& dims) {
  std::vector<int64_t> s(dims.size());
  int64_t stride = 1;
  for (size_t i = dims.size(); i-- > 0;) {
    s[i] = stride;
    stride *= dims[i];
  }
  return s;
}

// Offsets in src and dst of the `index`-th element of `dims` (row-major).
inline void offsetsOf(int64_t index, const std::vector<int64_t>& dims, const std::vector<int64_t>& ss,
                      const std::vector<int64_t>& ds, int64_t& so, int64_t& dO) {
  so = dO = 0;
  for (size_t d = dims.size(); d-- > 0;) {
    int64_t i = index % dims[d];
    index /= dims[d];
    so += i * ss[d];
    dO += i * ds[d];
  }
}

// Transposes the (a, b) plane where src is contiguous along a and dst along b,
// in square tiles so that both sides touch few cache lines at a time.
void tiledTranspose(std::vector<int64_t> dims, std::vector<int64_t> ss, std::vector<int64_t> ds, size_t a,
                    const float* src, float* dst) {
  constexpr int64_t T = 32;
  const size_t b = dims.size() - 1;
  const int64_t A = dims[a], B = dims[b], srcStrideB = ss[b], dstStrideA = ds[a];
  for (size_t d : {b, a}) {  // the remaining dims index whole planes
    dims.erase(dims.begin() + d);
    ss.erase(ss.begin() + d);
    ds.erase(ds.begin() + d);
  }
  const int64_t tilesA = (A + T - 1) / T, tilesB = (B + T - 1) / T;
  parallelRanges(product(dims) * tilesA * tilesB, T * T, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      int64_t tb = t % tilesB, ta = t / tilesB % tilesA, so, dO;
      offsetsOf(t / (tilesA * tilesB), dims, ss, ds, so, dO);
      const float* sp = src + so + ta * T + tb * T * srcStrideB;
      float* dp = dst + dO + ta * T * dstStrideA + tb * T;
      int64_t na = std::min(T, A - ta * T), nb = std::min(T, B - tb * T);
      for (int64_t i = 0; i < na; ++i)
        for (int64_t j = 0; j < nb; ++j) dp[i * dstStrideA + j] = sp[i + j * srcStrideB];
    }
  });
}

// dst[i . ds] = src[i . ss] for every index i of `dims` (strides in elements;
// a stride of 0 re-reads, which is how tile broadcasts).
void stridedCopy(std::vector<int64_t> dims, std::vector<int64_t> ss, std::vector<int64_t> ds, const float* src,
                 float* dst) {
  if (product(dims) == 0) return;
  collapseDims(dims, {&ss, &ds});
  if (dims.empty()) {
    *dst = *src;
    return;
  }
  const size_t last = dims.size() - 1;
  const int64_t inner = dims[last], si = ss[last], di = ds[last];
  if (di == 1 && si != 1) {
    for (size_t a = 0; a < last; ++a)
      if (ss[a] == 1) return tiledTranspose(dims, ss, ds, a, src, dst);
  }
  dims.pop_back();
  parallelRanges(product(dims), inner, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      int64_t so, dO;
      offsetsOf(row, dims, ss, ds, so, dO);
      const float* s = src + so;
      float* d = dst + dO;
      if (si == 1 && di == 1) {
        std::memcpy(d, s, inner * sizeof(float));
      } else {
        for (int64_t i = 0; i < inner; ++i) d[i * di] = s[i * si];
      }
    }
  });
}

struct Tensor {
  float* data;
  std::vector<int64_t> shape;
};

Tensor tensorArg(const Napi::CallbackInfo& info, int data, int shape, const char* what) {
  auto dims = intList(info[shape], what);
  return {floatsOfLength(info[data], product(dims), what), dims};
}

// Argument i: one integer per dimension of x.
std::vector<int64_t> perDim(const Napi::CallbackInfo& info, int i, const Tensor& x, const char* what) {
  auto v = intList(info[i], what);
  if (v.size() != x.shape.size())
    throw Napi::RangeError::New(info.Env(), std::string(what) + " must have one entry per dimension");
  return v;
}

int64_t offsetOf(const std::vector<int64_t>& index, const std::vector<int64_t>& strides) {
  int64_t offset = 0;
  for (size_t d = 0; d < index.size(); ++d) offset += index[d] * strides[d];
  return offset;
}

// transpose(x, shape, perm, y): y's dimension i is x's dimension perm[i].
Napi::Value Transpose(const Napi::CallbackInfo& info) {
  Tensor x = tensorArg(info, 0, 1, "x");
  auto perm = perDim(info, 2, x, "perm");
  auto xs = contiguousStrides(x.shape);
  std::vector<int64_t> dims, ss;
  for (auto p : perm) {
    if (p < 0 || p >= static_cast<int64_t>(x.shape.size())) throw Napi::RangeError::New(info.Env(), "perm out of range");
    dims.push_back(x.shape[p]);
    ss.push_back(xs[p]);
  }
  float* y = floatsOfLength(info[3], product(dims), "y");
  stridedCopy(dims, ss, contiguousStrides(dims), x.data, y);
  return info.Env().Undefined();
}

// slice(x, shape, begin, size, y)
Napi::Value Slice(const Napi::CallbackInfo& info) {
  Tensor x = tensorArg(info, 0, 1, "x");
  auto begin = perDim(info, 2, x, "begin"), size = perDim(info, 3, x, "size");
  for (size_t d = 0; d < begin.size(); ++d) {
    if (begin[d] < 0 || size[d] < 0 || begin[d] + size[d] > x.shape[d])
      throw Napi::RangeError::New(info.Env(), "slice out of bounds");
  }
  float* y = floatsOfLength(info[4], product(size), "y");
  auto xs = contiguousStrides(x.shape);
  stridedCopy(size, xs, contiguousStrides(size), x.data + offsetOf(begin, xs), y);
  return info.Env().Undefined();
}

// pad(x, shape, before, after, value, y)
Napi::Value Pad(const Napi::CallbackInfo& info) {
  Tensor x = tensorArg(info, 0, 1, "x");
  auto before = perDim(info, 2, x, "before"), after = perDim(info, 3, x, "after");
  float value = info[4].As<Napi::Number>().FloatValue();
  std::vector<int64_t> yShape(x.shape.size());
  for (size_t d = 0; d < yShape.size(); ++d) {
    if (before[d] < 0 || after[d] < 0) throw Napi::RangeError::New(info.Env(), "negative padding");
    yShape[d] = before[d] + x.shape[d] + after[d];
  }
  float* y = floatsOfLength(info[5], product(yShape), "y");
  auto ys = contiguousStrides(yShape);
  parallelRanges(product(yShape), 1, [&](int64_t b, int64_t e) { std::fill(y + b, y + e, value); });
  stridedCopy(x.shape, contiguousStrides(x.shape), ys, x.data, y + offsetOf(before, ys));
  return info.Env().Undefined();
}

// tile(x, shape, reps, y): y is x repeated reps[d] times along each dimension,
// i.e. y viewed as [r0, d0, r1, d1, ...] reads x with stride 0 on each r.
Napi::Value Tile(const Napi::CallbackInfo& info) {
  Tensor x = tensorArg(info, 0, 1, "x");
  auto reps = perDim(info, 2, x, "reps");
  auto xs = contiguousStrides(x.shape);
  std::vector<int64_t> dims, ss;
  for (size_t d = 0; d < reps.size(); ++d) {
    if (reps[d] < 0) throw Napi::RangeError::New(info.Env(), "negative reps");
    dims.insert(dims.end(), {reps[d], x.shape[d]});
    ss.insert(ss.end(), {0, xs[d]});
  }
  float* y = floatsOfLength(info[3], product(dims), "y");
  stridedCopy(dims, ss, contiguousStrides(dims), x.data, y);
  return info.Env().Undefined();
}

// concat(xs, outer, inners, y): each xs[k] viewed as [outer, inners[k]], laid
// side by side along the second axis.
Napi::Value Concat(const Napi::CallbackInfo& info) {
  auto list = info[0].As<Napi::Array>();
  int64_t outer = info[1].As<Napi::Number>().Int64Value();
  auto inners = intList(info[2], "inners");
  if (inners.size() != list.Length()) throw Napi::RangeError::New(info.Env(), "concat: one inner size per input");
  int64_t width = 0;
  for (auto w : inners) width += w;
  float* y = floatsOfLength(info[3], outer * width, "y");
  int64_t column = 0;
  for (uint32_t k = 0; k < list.Length(); ++k) {
    const float* x = floatsOfLength(list.Get(k), outer * inners[k], "concat input");
    stridedCopy({outer, inners[k]}, {inners[k], 1}, {width, 1}, x, y + column);
    column += inners[k];
  }
  return info.Env().Undefined();
}

// gatherRows(x, rowLength, indices, y): y's row j is x's row indices[j], x and
// y viewed as rows of rowLength (tf.gather along axis 0).
Napi::Value GatherRows(const Napi::CallbackInfo& info) {
  const float* x = floatData(info[0], "x");
  int64_t rowLength = info[1].As<Napi::Number>().Int64Value();
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Napi::TypeError::New(info.Env(), "indices must be an Int32Array");
  auto indices = info[2].As<Napi::Int32Array>();
  int64_t n = indices.ElementLength();
  if (rowLength <= 0 || static_cast<int64_t>(floatLength(info[0])) % rowLength != 0)
    throw Napi::RangeError::New(info.Env(), "gatherRows: x is not a whole number of rows");
  int64_t rows = floatLength(info[0]) / rowLength;
  const int32_t* index = indices.Data();
  for (int64_t j = 0; j < n; ++j) {
    if (index[j] < 0 || index[j] >= rows)
      throw Napi::RangeError::New(info.Env(), "gatherRows: index " + std::to_string(index[j]) + " is not in [0, " + std::to_string(rows) + ")");
  }
  float* y = floatsOfLength(info[3], n * rowLength, "y");
  parallelRanges(n, rowLength, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) std::memcpy(y + j * rowLength, x + index[j] * rowLength, rowLength * sizeof(float));
  });
  return info.Env().Undefined();
}

}  // namespace

void InitLayout(Napi::Env env, Napi::Object exports) {
  exports.Set("transpose", Napi::Function::New(env, Transpose));
  exports.Set("slice", Napi::Function::New(env, Slice));
  exports.Set("pad", Napi::Function::New(env, Pad));
  exports.Set("tile", Napi::Function::New(env, Tile));
  exports.Set("concat", Napi::Function::New(env, Concat));
  exports.Set("gatherRows", Napi::Function::New(env, GatherRows));
}

}  // namespace selfsup
