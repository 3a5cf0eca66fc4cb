#include "common.h"

namespace selfsup {

void InitLayout(Napi::Env env, Napi::Object exports) {}

}  // namespace selfsup
