// The one error type of native code: a failure that reaches JavaScript as a RecodeError whose `code` is
// `code` (the Node bindings convert it). Compute code throws it; it knows nothing of Node.
#pragma once

#include <stdexcept>
#include <string>

namespace recode {

struct Error : std::runtime_error {
  std::string code;
  Error(std::string c, const std::string& message) : std::runtime_error(message), code(std::move(c)) {}
};

}  // namespace recode
