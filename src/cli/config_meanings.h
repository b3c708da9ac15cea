#pragma once
// The meanings column of docs/config.md (config/reference.h), kept in config_meanings.cpp.
#include "agenttune/config/reference.h"

namespace agenttune::cli {

ConfigMeanings config_meanings();

}  // namespace agenttune::cli
