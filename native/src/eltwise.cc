#include "common.h"

namespace selfsup {

void InitEltwise(Napi::Env env, Napi::Object exports) {}

}  // namespace selfsup
