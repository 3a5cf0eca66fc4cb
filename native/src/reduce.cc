#include "common.h"

namespace selfsup {

void InitReduce(Napi::Env env, Napi::Object exports) {}

}  // namespace selfsup
