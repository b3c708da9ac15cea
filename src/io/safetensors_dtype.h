#pragma once
// safetensors dtype tags <-> torch scalar types, shared by the reader and the writer.
#include <c10/core/ScalarType.h>

#include <cstddef>
#include <optional>
#include <string>

namespace agenttune {

// Bytes per element for a header tag; 0 for tags we do not know (sub-byte and exotic formats).
inline size_t safetensors_elem_size(const std::string& tag) {
  if (tag == "F64" || tag == "I64" || tag == "U64") return 8;
  if (tag == "F32" || tag == "I32" || tag == "U32") return 4;
  if (tag == "F16" || tag == "BF16" || tag == "I16" || tag == "U16") return 2;
  if (tag == "I8" || tag == "U8" || tag == "BOOL" || tag == "F8_E4M3" || tag == "F8_E5M2") return 1;
  return 0;
}

// The dtypes a model can be loaded from; anything else is refused by name.
inline std::optional<c10::ScalarType> safetensors_model_dtype(const std::string& tag) {
  if (tag == "F32") return c10::ScalarType::Float;
  if (tag == "F16") return c10::ScalarType::Half;
  if (tag == "BF16") return c10::ScalarType::BFloat16;
  return std::nullopt;
}

// Header tag for a tensor being written; empty for a dtype safetensors cannot express here.
inline std::string safetensors_tag(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Double: return "F64";
    case c10::ScalarType::Float: return "F32";
    case c10::ScalarType::Half: return "F16";
    case c10::ScalarType::BFloat16: return "BF16";
    case c10::ScalarType::Long: return "I64";
    case c10::ScalarType::Int: return "I32";
    case c10::ScalarType::Short: return "I16";
    case c10::ScalarType::Char: return "I8";
    case c10::ScalarType::Byte: return "U8";
    case c10::ScalarType::Bool: return "BOOL";
    default: return "";
  }
}

// The scalar type of a tag safetensors_tag() writes; none for the others.
inline std::optional<c10::ScalarType> safetensors_written_dtype(const std::string& tag) {
  using S = c10::ScalarType;
  for (S t : {S::Double, S::Float, S::Half, S::BFloat16, S::Long, S::Int, S::Short, S::Char, S::Byte, S::Bool})
    if (safetensors_tag(t) == tag) return t;
  return std::nullopt;
}

}  // namespace agenttune
