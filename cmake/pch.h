// Precompiled header: the heavy, stable headers every area includes.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/csrc/autograd/generated/variable_factories.h>
#include <nlohmann/json.hpp>
#include <fmt/format.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
