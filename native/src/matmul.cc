// Batched matrix multiply C[b] = op(A[b]) x op(B[b]) (+ bias, + relu) via
// oneDNN's matmul primitive. Transposes are expressed as strides, so no data
// moves; a batch of 1 on either side broadcasts.
#include "common.h"

namespace selfsup {
namespace {

using dnnl::memory;
using dt = memory::data_type;

struct Matmul {
  dnnl::matmul prim;
  memory::desc a, b, bias, c;
};

ShapeCache<Matmul> cache;

Napi::Value MatmulFn(const Napi::CallbackInfo& info) {
  auto dims = intList(info[4], "dims");
  if (dims.size() != 8) throw Napi::Error::New(info.Env(), "matmul: dims must have 8 entries");
  int64_t m = dims[2], k = dims[3], n = dims[4];
  float* a = floatsOfLength(info[0], dims[0] * m * k, "a");
  float* b = floatsOfLength(info[1], dims[1] * k * n, "b");
  float* bias = optionalFloatsOfLength(info[2], n, "bias");
  float* c = floatsOfLength(info[3], std::max(dims[0], dims[1]) * m * n, "c");
  dims.push_back(bias != nullptr);
  auto& mm = cache.get(keyOf("matmul", dims), [&] {
    int64_t ba = dims[0], bb = dims[1];
    bool ta = dims[5], tb = dims[6], relu = dims[7];
    int64_t batch = std::max(ba, bb);
    // A is stored [ba, M, K] or, transposed, [ba, K, M]; likewise B.
    memory::desc ad({ba, m, k}, dt::f32, ta ? memory::dims{m * k, 1, m} : memory::dims{m * k, k, 1});
    memory::desc bd({bb, k, n}, dt::f32, tb ? memory::dims{k * n, 1, k} : memory::dims{k * n, n, 1});
    memory::desc cd({batch, m, n}, dt::f32, memory::dims{m * n, n, 1});
    memory::desc biasd = bias ? memory::desc({1, 1, n}, dt::f32, memory::dims{n, n, 1}) : memory::desc();
    dnnl::primitive_attr attr;
    if (relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(ops);
    }
    dnnl::matmul::desc d(ad, bd, biasd, cd);
    dnnl::matmul::primitive_desc pd(d, attr, cpuEngine());
    return Matmul{dnnl::matmul(pd), ad, bd, biasd, cd};
  });
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(mm.a, cpuEngine(), a)},
                                       {DNNL_ARG_WEIGHTS, memory(mm.b, cpuEngine(), b)},
                                       {DNNL_ARG_DST, memory(mm.c, cpuEngine(), c)}};
  if (bias) args.insert({DNNL_ARG_BIAS, memory(mm.bias, cpuEngine(), bias)});
  executeDeferringSignals(mm.prim, cpuStream(), args);
  cpuStream().wait();
  return info.Env().Undefined();
}

}  // namespace

void InitMatmul(Napi::Env env, Napi::Object exports) { exports.Set("matmul", Napi::Function::New(env, MatmulFn)); }

}  // namespace selfsup
