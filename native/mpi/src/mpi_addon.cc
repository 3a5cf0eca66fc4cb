// The MPI binding: raw typed arrays in, MPI calls out, nothing else. Bucketing,
// chunking past MPI's int counts, averaging and the hang watchdog live in
// TypeScript (src/dist/), so this file stays a thin, auditable shim.
//
// Errors come back as JS exceptions: MPI_COMM_WORLD is switched to
// MPI_ERRORS_RETURN right after init, so a failing call reports instead of
// killing the process from inside the library.
#include <mpi.h>
#include <napi.h>

#include <cstdint>
#include <string>

namespace {

MPI_Comm local_comm = MPI_COMM_NULL;

void check(Napi::Env env, int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Napi::Error::New(env, std::string(what) + ": " + std::string(text, len));
}

MPI_Op op_of(Napi::Env env, const Napi::Value& v) {
  switch (v.As<Napi::Number>().Int32Value()) {
    case 0: return MPI_SUM;
    case 1: return MPI_MAX;
    case 2: return MPI_MIN;
  }
  throw Napi::Error::New(env, "mpi: unknown reduction op");
}

// Counts cross into MPI as int; TypeScript chunks so they never exceed it.
int count_of(Napi::Env env, size_t n) {
  if (n > static_cast<size_t>(INT32_MAX)) throw Napi::Error::New(env, "mpi: count exceeds 2^31-1 (chunk it)");
  return static_cast<int>(n);
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = 0;
  if (!initialized) {
    // MULTIPLE so the watchdog thread may call MPI_Abort while the main
    // thread sits in a collective.
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
      throw Napi::Error::New(env, "MPI_Init_thread failed");
    }
  } else {
    MPI_Query_thread(&provided);
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rank = 0, size = 1, local_rank = 0, local_size = 1;
  check(env, MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank");
  check(env, MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size");
  if (local_comm == MPI_COMM_NULL) {
    check(env, MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local_comm), "MPI_Comm_split_type");
  }
  check(env, MPI_Comm_rank(local_comm, &local_rank), "MPI_Comm_rank(local)");
  check(env, MPI_Comm_size(local_comm, &local_size), "MPI_Comm_size(local)");
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(version, &len);
  Napi::Object out = Napi::Object::New(env);
  out.Set("rank", rank);
  out.Set("size", size);
  out.Set("localRank", local_rank);
  out.Set("localSize", local_size);
  out.Set("threadMultiple", provided >= MPI_THREAD_MULTIPLE);
  out.Set("library", std::string(version, len));
  return out;
}

// allreduceF32(buf, op): in place.
void AllreduceF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto buf = info[0].As<Napi::Float32Array>();
  check(env, MPI_Allreduce(MPI_IN_PLACE, buf.Data(), count_of(env, buf.ElementLength()), MPI_FLOAT, op_of(env, info[1]), MPI_COMM_WORLD),
        "MPI_Allreduce(float)");
}

// allreduceF64(buf, op): in place.
void AllreduceF64(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto buf = info[0].As<Napi::Float64Array>();
  check(env, MPI_Allreduce(MPI_IN_PLACE, buf.Data(), count_of(env, buf.ElementLength()), MPI_DOUBLE, op_of(env, info[1]), MPI_COMM_WORLD),
        "MPI_Allreduce(double)");
}

// broadcastBytes(u8, root): in place.
void BroadcastBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto buf = info[0].As<Napi::Uint8Array>();
  int root = info[1].As<Napi::Number>().Int32Value();
  check(env, MPI_Bcast(buf.Data(), count_of(env, buf.ByteLength()), MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
}

// allgatherv(send: Float32Array, recv: Float32Array, counts: Int32Array, displs: Int32Array)
void AllgathervF32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto send = info[0].As<Napi::Float32Array>();
  auto recv = info[1].As<Napi::Float32Array>();
  auto counts = info[2].As<Napi::Int32Array>();
  auto displs = info[3].As<Napi::Int32Array>();
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (counts.ElementLength() != static_cast<size_t>(size) || displs.ElementLength() != static_cast<size_t>(size)) {
    throw Napi::Error::New(env, "allgatherv: counts and displs need one entry per rank");
  }
  check(env,
        MPI_Allgatherv(send.Data(), count_of(env, send.ElementLength()), MPI_FLOAT, recv.Data(), counts.Data(), displs.Data(), MPI_FLOAT,
                       MPI_COMM_WORLD),
        "MPI_Allgatherv");
}

void Barrier(const Napi::CallbackInfo& info) { check(info.Env(), MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

// abort(code): ends every rank of the job; callable from the watchdog thread.
void Abort(const Napi::CallbackInfo& info) { MPI_Abort(MPI_COMM_WORLD, info[0].As<Napi::Number>().Int32Value()); }

void Finalize(const Napi::CallbackInfo& info) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (local_comm != MPI_COMM_NULL) MPI_Comm_free(&local_comm);
  MPI_Finalize();
}

Napi::Object Module(Napi::Env env, Napi::Object exports) {
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("allreduceF32", Napi::Function::New(env, AllreduceF32));
  exports.Set("allreduceF64", Napi::Function::New(env, AllreduceF64));
  exports.Set("broadcastBytes", Napi::Function::New(env, BroadcastBytes));
  exports.Set("allgathervF32", Napi::Function::New(env, AllgathervF32));
  exports.Set("barrier", Napi::Function::New(env, Barrier));
  exports.Set("abort", Napi::Function::New(env, Abort));
  exports.Set("finalize", Napi::Function::New(env, Finalize));
  return exports;
}

}  // namespace

NODE_API_MODULE(selfsup_mpi, Module)
