#include "common.h"

namespace selfsup {

void InitPool(Napi::Env env, Napi::Object exports) {}

}  // namespace selfsup
