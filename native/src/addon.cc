#include <cstdlib>

#include "common.h"

namespace selfsup {

dnnl::engine& cpuEngine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& cpuStream() {
  static dnnl::stream stream(cpuEngine());
  return stream;
}

static Precision precision = Precision::F32;

Precision currentPrecision() { return precision; }

bool bf16Supported() {
  auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  auto bf16 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
  return (isa & bf16) == bf16;  // oneDNN's ISA values are nested bit masks
}

std::string describe(const dnnl::memory::desc& d) {
  const dnnl_memory_desc_t& m = d.data;
  // The data type too: an f32 -> f32 and an f32 -> bf16 reorder between the same layouts differ.
  std::string s = std::to_string(m.ndims) + ":" + std::to_string(static_cast<int>(m.format_kind)) + "t" +
                  std::to_string(static_cast<int>(m.data_type));
  for (int i = 0; i < m.ndims; ++i) s += "," + std::to_string(m.dims[i]);
  if (m.format_kind == dnnl_blocked) {
    const auto& b = m.format_desc.blocking;
    for (int i = 0; i < m.ndims; ++i) s += "s" + std::to_string(b.strides[i]);
    for (int i = 0; i < b.inner_nblks; ++i) s += "b" + std::to_string(b.inner_blks[i]) + "i" + std::to_string(b.inner_idxs[i]);
  }
  s += "o" + std::to_string(m.offset0) + "x" + std::to_string(m.extra.flags);
  return s;
}

// Small reorders (conv weights, mostly) run on the calling thread: a parallel
// region costs more than the copy, and stalls outright when another process
// holds the other core.
class SmallWorkOnOneThread {
 public:
  explicit SmallWorkOnOneThread(size_t bytes) : saved_(omp_get_max_threads()) {
    if (bytes < (size_t{1} << 20)) omp_set_num_threads(1);
  }
  ~SmallWorkOnOneThread() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

static dnnl::reorder& cachedReorder(const dnnl::memory& from, const dnnl::memory& to) {
  static ShapeCache<dnnl::reorder> reorders;
  return reorders.get(describe(from.get_desc()) + "->" + describe(to.get_desc()), [&] { return dnnl::reorder(from, to); });
}

// Scratch starts on a 64-byte boundary: some oneDNN kernels load their
// blocked inputs with aligned AVX-512 moves (the Winograd backward-weights
// one crashed on a vector's 16-byte-aligned storage).
void* alignedScratch(std::vector<float>& slot, size_t bytes) {
  constexpr size_t kAlign = 64 / sizeof(float);
  size_t floats = (bytes + sizeof(float) - 1) / sizeof(float) + kAlign;
  if (slot.size() < floats) slot.resize(floats);
  auto address = reinterpret_cast<uintptr_t>(slot.data());
  return slot.data() + ((64 - address % 64) % 64) / sizeof(float);
}

static dnnl::memory scratch(const dnnl::memory::desc& d, std::vector<float>& slot) {
  return dnnl::memory(d, cpuEngine(), alignedScratch(slot, d.get_size()));
}

dnnl::memory reorderInto(const dnnl::memory::desc& from, void* src, const dnnl::memory::desc& to,
                         std::vector<float>& slot) {
  dnnl::memory srcMem(from, cpuEngine(), src);
  dnnl::memory dstMem = scratch(to, slot);
  SmallWorkOnOneThread limit(to.get_size());
  executeDeferringSignals(cachedReorder(srcMem, dstMem), cpuStream(), srcMem, dstMem);
  return dstMem;
}

dnnl::memory stageInput(const dnnl::memory::desc& user, void* ptr, const dnnl::memory::desc& want,
                        std::vector<float>& slot) {
  if (user == want) return dnnl::memory(want, cpuEngine(), ptr);
  return reorderInto(user, ptr, want, slot);
}

dnnl::memory stageOutput(const dnnl::memory::desc& user, void* ptr, const dnnl::memory::desc& want,
                         std::vector<float>& slot) {
  if (user == want) return dnnl::memory(want, cpuEngine(), ptr);
  return scratch(want, slot);
}

void finishOutput(const dnnl::memory& staged, const dnnl::memory::desc& user, void* ptr) {
  if (staged.get_data_handle() == ptr) return;
  dnnl::memory userMem(user, cpuEngine(), ptr);
  SmallWorkOnOneThread limit(user.get_size());
  executeDeferringSignals(cachedReorder(staged, userMem), cpuStream(), const_cast<dnnl::memory&>(staged), userMem);
}

void parallelRanges(int64_t n, int64_t cost, const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  int threads = omp_get_max_threads();
  if (threads <= 1 || n < 2 || n * cost <= kParallelGrain) {
    body(0, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    if (begin < end) body(begin, end);
  }
}

// The Float32Array's data, after checking it holds exactly `n` elements: the
// kernels index raw memory, so a shape that disagrees with the buffer must not get through.
float* floatsOfLength(const Napi::Value& v, int64_t n, const char* what) {
  float* p = floatData(v, what);
  if (static_cast<int64_t>(floatLength(v)) != n) {
    throw Napi::RangeError::New(v.Env(), std::string(what) + " has " + std::to_string(floatLength(v)) +
                                             " elements, its shape says " + std::to_string(n));
  }
  return p;
}

int64_t product(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (auto d : dims) n *= d;
  return n;
}

static Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  int n = info[0].As<Napi::Number>().Int32Value();
  if (n > 0) omp_set_num_threads(n);
  return Napi::Number::New(info.Env(), omp_get_max_threads());
}

// setPrecision("f32" | "bf16"): the precision of convolutions and matmuls
// from now on (see common.h); returns the one now in force.
static Napi::Value SetPrecision(const Napi::CallbackInfo& info) {
  std::string want = info[0].As<Napi::String>().Utf8Value();
  if (want == "bf16") {
    if (!bf16Supported()) {
      throw Napi::Error::New(info.Env(), "bf16 precision needs a CPU with AVX512-BF16; oneDNN reports ISA " +
                                             std::to_string(static_cast<int>(dnnl::get_effective_cpu_isa())));
    }
    precision = Precision::BF16;
  } else if (want == "f32") {
    precision = Precision::F32;
  } else {
    throw Napi::TypeError::New(info.Env(), "setPrecision: expected 'f32' or 'bf16', got '" + want + "'");
  }
  return Napi::String::New(info.Env(), want);
}

static Napi::Value GetInfo(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto out = Napi::Object::New(env);
  const dnnl_version_t* v = dnnl_version();
  out.Set("onednn", std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch));
  out.Set("threads", omp_get_max_threads());
  out.Set("isa", static_cast<int>(dnnl::get_effective_cpu_isa()));
  out.Set("bf16", bf16Supported());
  out.Set("precision", precision == Precision::BF16 ? "bf16" : "f32");
  return out;
}

void InitRoiAlign(Napi::Env env, Napi::Object exports);  // roi_align.cc

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  if (const char* t = std::getenv("SELFSUP_THREADS")) {
    int n = std::atoi(t);
    if (n > 0) omp_set_num_threads(n);
  }
  // The OpenMP workers never take asynchronous signals: a process-directed
  // signal could otherwise land on one while it runs oneDNN's JIT gemm on a
  // heap stack (SignalsDeferred in common.h). Node's main thread handles them.
#pragma omp parallel
  if (omp_get_thread_num() != 0) pthread_sigmask(SIG_BLOCK, &asyncSignals(), nullptr);
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("info", Napi::Function::New(env, GetInfo));
  exports.Set("setPrecision", Napi::Function::New(env, SetPrecision));
  InitConv(env, exports);
  InitMatmul(env, exports);
  InitBatchNorm(env, exports);
  InitPool(env, exports);
  InitEltwise(env, exports);
  InitReduce(env, exports);
  InitLayout(env, exports);
  InitRoiAlign(env, exports);
  return exports;
}

}  // namespace selfsup

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return selfsup::Init(env, exports); }

NODE_API_MODULE(selfsup_native, InitAddon)
