#include "common.h"

namespace selfsup {

void InitBatchNorm(Napi::Env env, Napi::Object exports) {}

}  // namespace selfsup
