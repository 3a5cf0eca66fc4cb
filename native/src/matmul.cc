#include "common.h"

namespace selfsup {

void InitMatmul(Napi::Env env, Napi::Object exports) {}

}  // namespace selfsup
