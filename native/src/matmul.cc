// Batched matrix multiply C[b] = op(A[b]) x op(B[b]) (+ bias, + relu) via
// oneDNN's matmul primitive. Transposes are expressed as strides, so no data
// moves; a batch of 1 on either side broadcasts. Under bf16 precision
// (common.h) A and B are reordered to bfloat16 first (A row-major, B in the
// layout the kernel prefers) and C stays f32.
#include "common.h"

namespace selfsup {
namespace {

using dnnl::memory;
using dt = memory::data_type;

struct Matmul {
  dnnl::matmul prim;
  memory::desc a, b, bias, c;  // as the primitive wants them
  memory::desc userA, userB;   // the f32 buffers as JavaScript holds them
};

ShapeCache<Matmul> cache;
std::vector<float> aSlot, bSlot;

struct MatmulShape {
  int64_t ba, bb, m, k, n;
  bool ta, tb, relu, bias;
  explicit MatmulShape(const std::vector<int64_t>& d, bool withBias)
      : ba(d[0]), bb(d[1]), m(d[2]), k(d[3]), n(d[4]), ta(d[5]), tb(d[6]), relu(d[7]), bias(withBias) {}
  // A is stored [ba, M, K] or, transposed, [ba, K, M]; likewise B.
  memory::desc userA() const { return memory::desc({ba, m, k}, dt::f32, ta ? memory::dims{m * k, 1, m} : memory::dims{m * k, k, 1}); }
  memory::desc userB() const { return memory::desc({bb, k, n}, dt::f32, tb ? memory::dims{k * n, 1, k} : memory::dims{k * n, n, 1}); }
  memory::desc c() const { return memory::desc({std::max(ba, bb), m, n}, dt::f32, memory::dims{m * n, n, 1}); }
  memory::desc biasDesc() const { return bias ? memory::desc({1, 1, n}, dt::f32, memory::dims{n, n, 1}) : memory::desc(); }

  dnnl::matmul::primitive_desc pd() const {
    dnnl::primitive_attr attr;
    if (relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(ops);
    }
    return inPrecision([&](dt type) {
      memory::desc a = type == dt::f32 ? userA() : memory::desc({ba, m, k}, type, memory::format_tag::abc);
      memory::desc b = type == dt::f32 ? userB() : memory::desc({bb, k, n}, type, memory::format_tag::any);
      dnnl::matmul::desc d(a, b, biasDesc(), c());
      return dnnl::matmul::primitive_desc(d, attr, cpuEngine());
    });
  }
};

Napi::Value MatmulFn(const Napi::CallbackInfo& info) {
  auto dims = intList(info[4], "dims");
  if (dims.size() != 8) throw Napi::Error::New(info.Env(), "matmul: dims must have 8 entries");
  int64_t m = dims[2], k = dims[3], n = dims[4];
  float* a = floatsOfLength(info[0], dims[0] * m * k, "a");
  float* b = floatsOfLength(info[1], dims[1] * k * n, "b");
  float* bias = optionalFloatsOfLength(info[2], n, "bias");
  float* c = floatsOfLength(info[3], std::max(dims[0], dims[1]) * m * n, "c");
  MatmulShape s(dims, bias != nullptr);
  dims.push_back(bias != nullptr);
  dims.push_back(static_cast<int64_t>(currentPrecision()));
  auto& mm = cache.get(keyOf("matmul", dims), [&] {
    auto pd = s.pd();
    return Matmul{dnnl::matmul(pd), pd.src_desc(), pd.weights_desc(), s.biasDesc(), pd.dst_desc(), s.userA(), s.userB()};
  });
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, stageInput(mm.userA, a, mm.a, aSlot)},
                                       {DNNL_ARG_WEIGHTS, stageInput(mm.userB, b, mm.b, bSlot)},
                                       {DNNL_ARG_DST, memory(mm.c, cpuEngine(), c)}};
  if (bias) args.insert({DNNL_ARG_BIAS, memory(mm.bias, cpuEngine(), bias)});
  executeDeferringSignals(mm.prim, cpuStream(), args);
  cpuStream().wait();
  return info.Env().Undefined();
}

// matmulImplementation(dims): the oneDNN implementation this shape runs at
// the current precision and its input data type after a space, e.g.
// "brg:avx512_core_bf16 bf16".
Napi::Value MatmulImplementation(const Napi::CallbackInfo& info) {
  auto dims = intList(info[0], "dims");
  if (dims.size() != 8) throw Napi::Error::New(info.Env(), "matmulImplementation: dims must have 8 entries");
  auto pd = MatmulShape(dims, false).pd();
  std::string type = pd.src_desc().data_type() == dt::bf16 ? " bf16" : " f32";
  return Napi::String::New(info.Env(), std::string(pd.impl_info_str()) + type);
}

}  // namespace

void InitMatmul(Napi::Env env, Napi::Object exports) {
  exports.Set("matmul", Napi::Function::New(env, MatmulFn));
  exports.Set("matmulImplementation", Napi::Function::New(env, MatmulImplementation));
}

}  // namespace selfsup
