// 2-D convolution on NHWC activations and tfjs-layout weights
// [KH, KW, IC/groups, OC] (depthwise: [KH, KW, C, multiplier]), via oneDNN.
// Weights are reordered into whatever blocked layout the chosen oneDNN
// implementation prefers; activations stay NHWC end to end.
#include <string>
#include <algorithm>
#include <cstdlib>

#include "common.h"

namespace selfsup {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

struct ConvShape {
  int64_t n, h, w, c, kh, kw, oc, oh, ow, sh, sw, dh, dw, pt, pl, pb, pr, groups, relu;

  explicit ConvShape(const std::vector<int64_t>& d) {
    if (d.size() != 19) throw std::invalid_argument("conv2d: dims must have 19 entries");
    n = d[0]; h = d[1]; w = d[2]; c = d[3]; kh = d[4]; kw = d[5]; oc = d[6]; oh = d[7]; ow = d[8];
    sh = d[9]; sw = d[10]; dh = d[11]; dw = d[12]; pt = d[13]; pl = d[14]; groups = d[17]; relu = d[18];
    // oneDNN wants the right/bottom padding that makes its output size formula
    // exact; tfjs may report more (VALID with a remainder), so derive it.
    pb = (oh - 1) * sh + (kh - 1) * dh + 1 - h - pt;
    pr = (ow - 1) * sw + (kw - 1) * dw + 1 - w - pl;
    if (groups < 1 || c % groups || oc % groups) throw std::invalid_argument("conv2d: channels not divisible by groups");
  }
  int64_t srcSize() const { return n * h * w * c; }
  int64_t dstSize() const { return n * oh * ow * oc; }
  int64_t weightSize() const { return kh * kw * (c / groups) * oc; }
  memory::desc src() const { return memory::desc({n, c, h, w}, dt::f32, tag::nhwc); }
  memory::desc dst() const { return memory::desc({n, oc, oh, ow}, dt::f32, tag::nhwc); }
  memory::desc bias() const { return memory::desc({oc}, dt::f32, tag::x); }
  memory::dims weightDims() const {
    if (groups == 1) return {oc, c, kh, kw};
    return {groups, oc / groups, c / groups, kh, kw};
  }
  // tfjs keeps weights as [KH, KW, IC/g, OC] with OC = g * OC/g, group-major.
  memory::desc userWeights() const {
    int64_t icg = c / groups, ocg = oc / groups;
    if (groups == 1) return memory::desc(weightDims(), dt::f32, memory::dims{1, oc, kw * icg * oc, icg * oc});
    return memory::desc(weightDims(), dt::f32, memory::dims{ocg, 1, oc, kw * icg * oc, icg * oc});
  }
  memory::desc anyWeights(dt type = dt::f32) const { return memory::desc(weightDims(), type, tag::any); }
  memory::dims strides() const { return {sh, sw}; }
  memory::dims dilates() const { return {dh - 1, dw - 1}; }
  memory::dims padL() const { return {pt, pl}; }
  memory::dims padR() const { return {pb, pr}; }
};

// Activations may run in oneDNN's blocked layouts, which its fastest kernels
// for some shapes and directions prefer; they are then reordered on the way in
// and out. SELFSUP_CONV_LAYOUT=nhwc|blocked forces one choice for every shape.
enum class Layout { Nhwc, Blocked };

Layout layoutChoice() {
  static Layout choice = [] {
    const char* v = std::getenv("SELFSUP_CONV_LAYOUT");
    return v && std::string(v) == "blocked" ? Layout::Blocked : Layout::Nhwc;
  }();
  return choice;
}

struct ConvPrimitive {
  dnnl::primitive prim;
  memory::desc src, weights, dst;  // as the primitive wants them (diff_* in backward)
};

ShapeCache<ConvPrimitive> forwardCache, backwardDataCache, backwardWeightsCache;
std::vector<float> srcSlot, dstSlot, weightSlot;

// Winograd F(4x4, 3x3) (oneDNN's jit_wino_4x3) does a 3x3 stride-1
// convolution in about half the time of the direct kernels on maps of 8x8
// and more (ResNet-18 w64, batch 64: 16-18 ms vs 31 ms per forward call at
// 16x16 and 32x32), and in 8.7 ms against 22.5 on 4x4 maps (res5, 512
// channels: one output tile per image), at a relative error of 2e-6 against the
// direct result. It runs in blocked layouts, so its activations are
// reordered in and out. Forward, stride-1 backward-data (which runs as a
// forward convolution) and backward-weights; the last crashed on unaligned
// scratch until scratch was 64-byte aligned (addon.cc). SELFSUP_CONV_WINOGRAD=0 turns it off.
bool winogradAllowed() {
  static bool on = [] {
    const char* v = std::getenv("SELFSUP_CONV_WINOGRAD");
    return !(v && std::string(v) == "0");
  }();
  return on;
}

bool winogradShape(const ConvShape& s) {
  return winogradAllowed() && s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1 &&
         s.groups == 1 && s.c % 16 == 0 && s.oc % 16 == 0 && s.c >= 64 && s.oc >= 64 && s.oh >= 4 && s.ow >= 4;
}

// `type`: f32, or bf16 for a convolution's inputs under bf16 precision
// (its outputs stay f32: oneDNN accumulates in f32 and writes f32).
memory::desc activations(const memory::desc& nhwc, bool blocked = false, dt type = dt::f32) {
  return memory::desc(nhwc.dims(), type, layoutChoice() == Layout::Nhwc && !blocked ? tag::nhwc : tag::any);
}

// `winograd`: try Winograd where the shape allows it; oneDNN declines some
// (padding above 1, for one), and those run direct. oneDNN 2.6 has Winograd
// only in f32, so bf16 runs direct.
dnnl::convolution_forward::primitive_desc forwardPd(const ConvShape& s, bool withBias, bool withRelu, bool winograd,
                                                    dt type = dt::f32) {
  dnnl::primitive_attr attr;
  if (withRelu) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  auto make = [&](bool wino) {
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_training,
                                      wino ? dnnl::algorithm::convolution_winograd : dnnl::algorithm::convolution_direct,
                                      activations(s.src(), wino, type), s.anyWeights(type), withBias ? s.bias() : memory::desc(),
                                      activations(s.dst(), wino), s.strides(), s.dilates(), s.padL(), s.padR());
    return dnnl::convolution_forward::primitive_desc(d, attr, cpuEngine());
  };
  if (winograd && type == dt::f32 && winogradShape(s)) {
    try {
      return make(true);
    } catch (const dnnl::error&) {
    }
  }
  return make(false);
}

// `weights` describes w when it is not in tfjs's [KH, KW, IC, OC] layout.
void runForward(const ConvShape& s, std::vector<int64_t> key, float* x, float* w, float* b, float* y,
                const memory::desc* weights = nullptr) {
  key.push_back(b != nullptr);
  key.push_back(static_cast<int64_t>(currentPrecision()));
  auto& fwd = forwardCache.get(keyOf("fwd", key), [&] {
    auto pd = inPrecision([&](dt type) { return forwardPd(s, b != nullptr, s.relu != 0, true, type); });
    return ConvPrimitive{dnnl::convolution_forward(pd), pd.src_desc(), pd.weights_desc(), pd.dst_desc()};
  });
  memory dst = stageOutput(s.dst(), y, fwd.dst, dstSlot);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, stageInput(s.src(), x, fwd.src, srcSlot)},
                                       {DNNL_ARG_WEIGHTS, stageInput(weights ? *weights : s.userWeights(), w, fwd.weights, weightSlot)},
                                       {DNNL_ARG_DST, dst}};
  if (b) args.insert({DNNL_ARG_BIAS, memory(s.bias(), cpuEngine(), b)});
  executeDeferringSignals(fwd.prim, cpuStream(), args);
  finishOutput(dst, s.dst(), y);
  cpuStream().wait();
}

Napi::Value Conv2d(const Napi::CallbackInfo& info) {
  auto dims = intList(info[4], "dims");
  ConvShape s(dims);
  float* x = floatsOfLength(info[0], s.srcSize(), "x");
  float* w = floatsOfLength(info[1], s.weightSize(), "w");
  float* b = optionalFloatsOfLength(info[2], s.oc, "bias");
  float* y = floatsOfLength(info[3], s.dstSize(), "y");
  runForward(s, dims, x, w, b, y);
  return info.Env().Undefined();
}

// With stride 1, dx is the forward convolution of dy with the filter flipped in
// space and with input and output channels swapped. oneDNN's forward kernels
// are faster than its backward-data ones (about 1.5x on AVX-512 here), so
// that is how stride-1 convolutions run backward.
bool backwardDataAsForward(const ConvShape& s) {
  return s.sh == 1 && s.sw == 1 && s.groups == 1 && (s.kh - 1) * s.dh >= std::max(s.pt, s.pb) &&
         (s.kw - 1) * s.dw >= std::max(s.pl, s.pr);
}

// The dims of the forward convolution that computes this shape's stride-1 backward-data.
std::vector<int64_t> backwardDataForwardDims(const ConvShape& s) {
  return {s.n, s.oh, s.ow, s.oc, s.kh, s.kw, s.c, s.h, s.w, 1, 1, s.dh, s.dw,
          (s.kh - 1) * s.dh - s.pt, (s.kw - 1) * s.dw - s.pl, 0, 0, 1, 0};
}

std::vector<float> flippedSlot;

void backwardDataByForward(const ConvShape& s, float* dy, float* w, float* dx) {
  std::vector<int64_t> dims = backwardDataForwardDims(s);
  ConvShape t(dims);
  // Only the spatial flip is copied (one contiguous block per tap); the
  // in/out channel swap is expressed as strides, so oneDNN's own (parallel)
  // reorder into its blocked layout does the transposition.
  flippedSlot.resize(s.weightSize());
  float* flipped = flippedSlot.data();
  const int64_t tap = s.c * s.oc;
  for (int64_t a = 0; a < s.kh; ++a)
    for (int64_t b = 0; b < s.kw; ++b)
      std::copy_n(w + ((s.kh - 1 - a) * s.kw + (s.kw - 1 - b)) * tap, tap, flipped + (a * s.kw + b) * tap);
  // Dims of the transposed problem (oc' = C, ic' = OC): element (i, o) of a tap sits at i * OC + o.
  memory::desc swapped({s.c, s.oc, s.kh, s.kw}, dt::f32, memory::dims{s.oc, 1, s.kw * tap, tap});
  runForward(t, dims, dy, flipped, nullptr, dx, &swapped);
}

dnnl::convolution_backward_data::primitive_desc backwardDataPd(const ConvShape& s) {
  return inPrecision([&](dt type) {
    dnnl::convolution_backward_data::desc d(dnnl::algorithm::convolution_direct, activations(s.src()), s.anyWeights(type),
                                            activations(s.dst(), false, type), s.strides(), s.dilates(), s.padL(), s.padR());
    return dnnl::convolution_backward_data::primitive_desc(d, cpuEngine(), forwardPd(s, false, false, false, type));
  });
}

Napi::Value Conv2dBackwardData(const Napi::CallbackInfo& info) {
  auto dims = intList(info[3], "dims");
  ConvShape s(dims);
  dims[18] = 0;
  float* dy = floatsOfLength(info[0], s.dstSize(), "dy");
  float* w = floatsOfLength(info[1], s.weightSize(), "w");
  float* dx = floatsOfLength(info[2], s.srcSize(), "dx");
  if (backwardDataAsForward(s)) {
    backwardDataByForward(s, dy, w, dx);
    return info.Env().Undefined();
  }
  dims.push_back(static_cast<int64_t>(currentPrecision()));
  auto& bwd = backwardDataCache.get(keyOf("bwd_data", dims), [&] {
    auto pd = backwardDataPd(s);
    return ConvPrimitive{dnnl::convolution_backward_data(pd), pd.diff_src_desc(), pd.weights_desc(), pd.diff_dst_desc()};
  });
  memory diffSrc = stageOutput(s.src(), dx, bwd.src, srcSlot);
  std::unordered_map<int, memory> args{{DNNL_ARG_DIFF_DST, stageInput(s.dst(), dy, bwd.dst, dstSlot)},
                                       {DNNL_ARG_WEIGHTS, stageInput(s.userWeights(), w, bwd.weights, weightSlot)},
                                       {DNNL_ARG_DIFF_SRC, diffSrc}};
  executeDeferringSignals(bwd.prim, cpuStream(), args);
  finishOutput(diffSrc, s.src(), dx);
  cpuStream().wait();
  return info.Env().Undefined();
}

// Backward-weights runs Winograd on the same shapes as forward: 1.2x (32x32
// maps, 64 channels) to 2.1x (4x4, 512) faster than the direct kernel with
// the reorders to its blocked layout included. In f32 only, like forward.
bool winogradBackwardWeights(const ConvShape& s) { return currentPrecision() == Precision::F32 && winogradShape(s); }

dnnl::convolution_backward_weights::primitive_desc backwardWeightsPd(const ConvShape& s, bool withBias) {
  auto make = [&](bool wino, dt type) {
    dnnl::convolution_backward_weights::desc d(wino ? dnnl::algorithm::convolution_winograd : dnnl::algorithm::convolution_direct,
                                               activations(s.src(), wino, type), s.anyWeights(),
                                               withBias ? s.bias() : memory::desc(), activations(s.dst(), wino, type),
                                               s.strides(), s.dilates(), s.padL(), s.padR());
    return dnnl::convolution_backward_weights::primitive_desc(d, cpuEngine(), forwardPd(s, withBias, false, wino, type));
  };
  if (winogradBackwardWeights(s)) {
    try {
      return make(true, dt::f32);
    } catch (const dnnl::error&) {
    }
  }
  return inPrecision([&](dt type) {
    auto pd = make(false, type);
    // oneDNN 2.6's jit_1x1:avx2 backward-weights kernel can spin forever in
    // its threads' barrier (seen on 2 threads, ResNet's strided 1x1
    // shortcut); the next implementation (gemm) is taken instead.
    while (std::string(pd.impl_info_str()).rfind("jit_1x1:avx2", 0) == 0 && pd.next_impl()) {
    }
    return pd;
  });
}

// bf16 backward-weights on small maps runs as one matmul, dw = cols(x)^T dy,
// with cols(x) the im2col rows [N*OH*OW, KH*KW*IC] in bf16: oneDNN 2.6's
// jit_bf16 kernel took 12.4 ms for res5 of a 32 px ResNet-18 w64 (4x4x512,
// batch 64: 390 GFLOP/s), the matmul 7.0 ms (690). On 8x8 maps and up the
// kernel is as fast as the matmul and needs no im2col copy. dw's rows come
// out in tfjs's [KH, KW, IC, OC] order, so nothing is reordered after.
bool backwardWeightsAsMatmul(const ConvShape& s) {
  return currentPrecision() == Precision::BF16 && bf16Supported() && s.groups == 1 && s.oh * s.ow <= 16 &&
         s.c >= 256 && s.oc >= 256;
}

// dw [KH*KW*IC, OC] = cols^T [KH*KW*IC, pixels] x dy [pixels, OC], cols and dy in bf16.
dnnl::matmul::desc backwardWeightsMatmulDesc(const ConvShape& s) {
  const int64_t pixels = s.n * s.oh * s.ow, rows = s.kh * s.kw * s.c;
  return dnnl::matmul::desc(memory::desc({rows, pixels}, dt::bf16, memory::dims{1, rows}),
                            memory::desc({pixels, s.oc}, dt::bf16, memory::dims{s.oc, 1}),
                            memory::desc({rows, s.oc}, dt::f32, memory::dims{s.oc, 1}));
}

ShapeCache<dnnl::matmul> backwardWeightsMatmulCache;
std::vector<float> colsSlot, xBf16Slot, dyBf16Slot;

void backwardWeightsByMatmul(const ConvShape& s, const std::vector<int64_t>& dims, float* x, float* dy, float* dw) {
  const int64_t pixels = s.n * s.oh * s.ow, rows = s.kh * s.kw * s.c;
  const auto desc = backwardWeightsMatmulDesc(s);
  memory xb = reorderInto(s.src(), x, memory::desc({s.n, s.c, s.h, s.w}, dt::bf16, tag::nhwc), xBf16Slot);
  memory::desc dyUser({pixels, s.oc}, dt::f32, memory::dims{s.oc, 1});
  memory dyb = reorderInto(dyUser, dy, memory::desc(desc.data.weights_desc), dyBf16Slot);
  // im2col in bf16 (2 bytes a value): row p holds, tap by tap, the C inputs under output pixel p; zeros in the padding.
  auto* cols = static_cast<uint16_t*>(alignedScratch(colsSlot, pixels * rows * sizeof(uint16_t)));
  const auto* xs = static_cast<const uint16_t*>(xb.get_data_handle());
  parallelRanges(pixels, rows, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n = p / (s.oh * s.ow), oy = p / s.ow % s.oh, ox = p % s.ow;
      for (int64_t a = 0; a < s.kh; ++a)
        for (int64_t b = 0; b < s.kw; ++b) {
          uint16_t* out = cols + p * rows + (a * s.kw + b) * s.c;
          const int64_t iy = oy * s.sh - s.pt + a * s.dh, ix = ox * s.sw - s.pl + b * s.dw;
          if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) std::fill_n(out, s.c, uint16_t{0});
          else std::copy_n(xs + ((n * s.h + iy) * s.w + ix) * s.c, s.c, out);
        }
    }
  });
  auto& mm = backwardWeightsMatmulCache.get(keyOf("bwd_weights_mm", dims), [&] {
    return dnnl::matmul(dnnl::matmul::primitive_desc(desc, cpuEngine()));
  });
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(desc.data.src_desc, cpuEngine(), cols)},
                                       {DNNL_ARG_WEIGHTS, dyb},
                                       {DNNL_ARG_DST, memory(desc.data.dst_desc, cpuEngine(), dw)}};
  executeDeferringSignals(mm, cpuStream(), args);
  cpuStream().wait();
}

Napi::Value Conv2dBackwardWeights(const Napi::CallbackInfo& info) {
  auto dims = intList(info[4], "dims");
  ConvShape s(dims);
  dims[18] = 0;
  float* x = floatsOfLength(info[0], s.srcSize(), "x");
  float* dy = floatsOfLength(info[1], s.dstSize(), "dy");
  float* dw = floatsOfLength(info[2], s.weightSize(), "dw");
  float* db = optionalFloatsOfLength(info[3], s.oc, "dbias");
  if (!db && backwardWeightsAsMatmul(s)) {
    backwardWeightsByMatmul(s, dims, x, dy, dw);
    return info.Env().Undefined();
  }
  dims.push_back(db != nullptr);
  dims.push_back(static_cast<int64_t>(currentPrecision()));
  auto& bwd = backwardWeightsCache.get(keyOf("bwd_weights", dims), [&] {
    auto pd = backwardWeightsPd(s, db != nullptr);
    return ConvPrimitive{dnnl::convolution_backward_weights(pd), pd.src_desc(), pd.diff_weights_desc(),
                         pd.diff_dst_desc()};
  });
  memory diffWeights = stageOutput(s.userWeights(), dw, bwd.weights, weightSlot);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, stageInput(s.src(), x, bwd.src, srcSlot)},
                                       {DNNL_ARG_DIFF_DST, stageInput(s.dst(), dy, bwd.dst, dstSlot)},
                                       {DNNL_ARG_DIFF_WEIGHTS, diffWeights}};
  if (db) args.insert({DNNL_ARG_DIFF_BIAS, memory(s.bias(), cpuEngine(), db)});
  executeDeferringSignals(bwd.prim, cpuStream(), args);
  finishOutput(diffWeights, s.userWeights(), dw);
  cpuStream().wait();
  return info.Env().Undefined();
}

// conv2dImplementation(dims, direction = "forward"): the oneDNN implementation
// this shape runs at the current precision (e.g. "jit_wino_4x3:avx512_core"),
// and its input data type after a space ("... bf16"), so tests and the
// benchmark can tell which path ran. direction: forward | backwardData | backwardWeights.
Napi::Value Conv2dImplementation(const Napi::CallbackInfo& info) {
  ConvShape s(intList(info[0], "dims"));
  std::string direction = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "forward";
  auto name = [](const auto& pd, const memory::desc& in) {
    return std::string(pd.impl_info_str()) + (in.data_type() == dt::bf16 ? " bf16" : " f32");
  };
  std::string out;
  if (direction == "forward") {
    auto pd = inPrecision([&](dt type) { return forwardPd(s, false, s.relu != 0, true, type); });
    out = name(pd, pd.src_desc());
  } else if (direction == "backwardData") {
    if (backwardDataAsForward(s)) {
      ConvShape t(backwardDataForwardDims(s));
      auto pd = inPrecision([&](dt type) { return forwardPd(t, false, false, true, type); });
      out = name(pd, pd.src_desc());
    } else {
      auto pd = backwardDataPd(s);
      out = name(pd, pd.diff_dst_desc());
    }
  } else if (direction == "backwardWeights" && backwardWeightsAsMatmul(s)) {
    auto pd = dnnl::matmul::primitive_desc(backwardWeightsMatmulDesc(s), cpuEngine());
    out = "im2col+matmul:" + std::string(pd.impl_info_str()) + " bf16";
  } else if (direction == "backwardWeights") {
    auto pd = backwardWeightsPd(s, false);
    out = name(pd, pd.src_desc());
  } else {
    throw Napi::TypeError::New(info.Env(), "conv2dImplementation: direction must be forward, backwardData or backwardWeights");
  }
  return Napi::String::New(info.Env(), out);
}

}  // namespace

void InitConv(Napi::Env env, Napi::Object exports) {
  exports.Set("conv2dImplementation", Napi::Function::New(env, Conv2dImplementation));
  exports.Set("conv2d", Napi::Function::New(env, Conv2d));
  exports.Set("conv2dBackwardData", Napi::Function::New(env, Conv2dBackwardData));
  exports.Set("conv2dBackwardWeights", Napi::Function::New(env, Conv2dBackwardWeights));
}

}  // namespace selfsup
