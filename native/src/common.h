// Shared pieces of the addon: the oneDNN engine and stream, argument helpers,
// and a shape-keyed primitive cache. Kernels work on raw float buffers that the
// JavaScript side owns; nothing here knows about tfjs.
#pragma once
#include <napi.h>
#include <omp.h>
#include <pthread.h>

#include <csignal>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <dnnl.hpp>
#include <memory>
#include <string>
#include <list>
#include <unordered_map>
#include <utility>
#include <vector>

namespace selfsup {

dnnl::engine& cpuEngine();
dnnl::stream& cpuStream();

// The process-wide precision of convolutions and matmuls (setPrecision from
// JavaScript). In bf16 their inputs (src/weights, diff_dst) are reordered to
// bfloat16 inside the kernel and oneDNN accumulates in f32 and writes f32
// outputs: the buffers JavaScript sees are float32 either way. Primitive
// caches key on it, so switching back and forth rebuilds nothing.
enum class Precision { F32 = 0, BF16 = 1 };
Precision currentPrecision();
// Whether oneDNN runs native bf16 kernels here (AVX512-BF16 or better).
bool bf16Supported();
// The data type of a convolution's or matmul's inputs under the current precision.
inline dnnl::memory::data_type computeType() {
  return currentPrecision() == Precision::BF16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
}

// Raw pointer to a Float32Array's elements (no copy).
inline float* floatData(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a Float32Array");
  }
  return v.As<Napi::Float32Array>().Data();
}
inline size_t floatLength(const Napi::Value& v) { return v.As<Napi::Float32Array>().ElementLength(); }


inline std::vector<int64_t> intList(const Napi::Value& v, const char* what) {
  if (!v.IsArray()) throw Napi::TypeError::New(v.Env(), std::string(what) + " must be an array of integers");
  auto a = v.As<Napi::Array>();
  std::vector<int64_t> out(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) out[i] = a.Get(i).As<Napi::Number>().Int64Value();
  return out;
}

inline std::string keyOf(const char* kind, const std::vector<int64_t>& dims) {
  std::string k(kind);
  for (auto d : dims) { k += ','; k += std::to_string(d); }
  return k;
}

// Asynchronous signals wait while a oneDNN primitive runs. Its JIT gemm
// moves the stack pointer into heap scratch, so a signal frame (SIGPROF from
// --cpu-prof, a burst of Ctrl-C) written there corrupted the heap ("corrupted
// size vs. prev_size"). Blocked signals stay pending and arrive after the call.
inline const sigset_t& asyncSignals() {
  static const sigset_t set = [] {
    sigset_t s;
    sigfillset(&s);
    for (int sync : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT}) sigdelset(&s, sync);
    return s;
  }();
  return set;
}

class SignalsDeferred {
 public:
  SignalsDeferred() { pthread_sigmask(SIG_BLOCK, &asyncSignals(), &saved_); }
  ~SignalsDeferred() { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  SignalsDeferred(const SignalsDeferred&) = delete;
  SignalsDeferred& operator=(const SignalsDeferred&) = delete;

 private:
  sigset_t saved_;
};

/** Runs a oneDNN primitive with asynchronous signals deferred (see SignalsDeferred). */
template <typename Primitive, typename... Args>
void executeDeferringSignals(Primitive& prim, Args&&... args) {
  SignalsDeferred deferred;
  prim.execute(std::forward<Args>(args)...);
}

// Memoises objects built for one shape, so a training loop re-creates nothing.
// Bounded, least recently used first out: a detector's heads see a new RoI
// count nearly every step, and an unbounded cache of oneDNN primitives grew
// to gigabytes over a fine-tune. A returned reference stays valid until
// `capacity` other shapes have been added.
template <typename T>
class ShapeCache {
 public:
  explicit ShapeCache(size_t capacity = 256) : capacity_(capacity < 2 ? 2 : capacity) {}

  template <typename Make>
  T& get(const std::string& key, Make make) {
    auto it = map_.find(key);
    if (it != map_.end()) {
      order_.splice(order_.begin(), order_, it->second.second);
      return *it->second.first;
    }
    if (map_.size() >= capacity_) {
      map_.erase(order_.back());
      order_.pop_back();
    }
    auto* made = new T(make());
    order_.push_front(key);
    map_.emplace(key, std::make_pair(std::unique_ptr<T>(made), order_.begin()));
    return *made;
  }
  size_t size() const { return map_.size(); }
  void clear() {
    map_.clear();
    order_.clear();
  }

 private:
  size_t capacity_;
  std::list<std::string> order_;
  std::unordered_map<std::string, std::pair<std::unique_ptr<T>, std::list<std::string>::iterator>> map_;
};

// Whether a oneDNN implementation name is a reference (slow, scalar) kernel.
inline bool isReference(const char* impl) { return std::string(impl).find("ref") != std::string::npos; }

// The primitive descriptor `make(type)` builds with inputs (src, weights,
// diff_dst) of the current precision's data type. In bf16 a shape oneDNN has
// no fast bf16 kernel for (only its reference implementation, or none) is
// built in f32 instead; the cached primitive's memory descs say which, and
// staging converts the f32 buffers to match.
template <typename Make>
auto inPrecision(Make make) -> decltype(make(dnnl::memory::data_type::f32)) {
  if (currentPrecision() == Precision::BF16) {
    try {
      auto pd = make(dnnl::memory::data_type::bf16);
      if (!isReference(pd.impl_info_str())) return pd;
    } catch (const dnnl::error&) {
    }
  }
  return make(dnnl::memory::data_type::f32);
}

// A reorder from one layout to another, built once per shape pair.
struct CachedReorder {
  dnnl::reorder prim;
  dnnl::memory::desc from, to;
};

// `bytes` of storage in `slot` starting on a 64-byte boundary, valid until
// the slot is used again.
void* alignedScratch(std::vector<float>& slot, size_t bytes);

// A printable, unique description of a memory desc, for cache keys.
std::string describe(const dnnl::memory::desc& d);

// Reorders `src` (described by `from`) into a scratch buffer in layout `to`,
// returning a memory object that stays valid until the next call with the same slot.
dnnl::memory reorderInto(const dnnl::memory::desc& from, void* src, const dnnl::memory::desc& to,
                         std::vector<float>& slot);

// A primitive's input in the layout it wants: the user's buffer itself when
// the layouts agree, else a reordered copy in `slot`.
dnnl::memory stageInput(const dnnl::memory::desc& user, void* ptr, const dnnl::memory::desc& want,
                        std::vector<float>& slot);
// A primitive's output in the layout it wants: the user's buffer when the
// layouts agree, else scratch in `slot` that finishOutput reorders back.
dnnl::memory stageOutput(const dnnl::memory::desc& user, void* ptr, const dnnl::memory::desc& want,
                         std::vector<float>& slot);
void finishOutput(const dnnl::memory& staged, const dnnl::memory::desc& user, void* ptr);

// Splits [0, n) into one contiguous range per thread. `cost` is the work per
// item in elements, so that small jobs stay on the calling thread.
void parallelRanges(int64_t n, int64_t cost, const std::function<void(int64_t, int64_t)>& body);

// The Float32Array's data, after checking it holds exactly `n` elements: the
// kernels index raw memory, so a shape that disagrees with the buffer must not get through.
float* floatsOfLength(const Napi::Value& v, int64_t n, const char* what);

// Like floatsOfLength, for an optional argument: null/undefined gives nullptr.
inline float* optionalFloatsOfLength(const Napi::Value& v, int64_t n, const char* what) {
  return v.IsNull() || v.IsUndefined() ? nullptr : floatsOfLength(v, n, what);
}

int64_t product(const std::vector<int64_t>& dims);

// Drops size-1 dimensions and merges each dimension into its outer neighbour
// wherever every operand's strides allow it, so that later loops see the
// fewest, longest dimensions (layout copies and broadcasting both use it).
void collapseDims(std::vector<int64_t>& dims, std::initializer_list<std::vector<int64_t>*> strides);

// The module initialisers, one per source file.
void InitConv(Napi::Env env, Napi::Object exports);
void InitMatmul(Napi::Env env, Napi::Object exports);
void InitBatchNorm(Napi::Env env, Napi::Object exports);
void InitPool(Napi::Env env, Napi::Object exports);
void InitEltwise(Napi::Env env, Napi::Object exports);
void InitReduce(Napi::Env env, Napi::Object exports);
void InitLayout(Napi::Env env, Napi::Object exports);

// Element counts below this run on one thread: a parallel region costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 15;

}  // namespace selfsup
