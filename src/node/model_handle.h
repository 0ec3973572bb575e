// The JavaScript model handle shared by model_binding.cpp (which makes it) and train_step_binding.cpp.
#pragma once

#include <memory>

#include "model/model.h"
#include "node/napi_util.h"

namespace recode::model {

// The backend behind a JavaScript model handle (argument i); throws ERR_INVALID_ARG when disposed.
std::shared_ptr<Backend> backend_from_handle(const Args& a, size_t i);

// The model configuration at argument 0 (lib/model/config.ts NativeModelConfig), checked field by field.
ModelConfig model_config_arg(const Args& a);

// options.adapter at argument i (train_step_binding.cpp): absent or type 'none' is full fine-tuning.
struct AdapterSpec;
AdapterSpec adapter_spec(const Args& a, size_t i);

}  // namespace recode::model
