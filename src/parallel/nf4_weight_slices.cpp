#include "agenttune/parallel/nf4_weight_slices.h"

#include <ATen/ATen.h>

#include <map>

#include "agenttune/quant/nf4.h"
#include "agenttune/util/error.h"

namespace agenttune::parallel {

namespace {

constexpr std::string_view kRecordSuffix = "_nf4";  // `<proj>.weight_nf4` holds `<proj>.weight`

// Record name -> the shape of the weight it quantises.
std::map<std::string, std::vector<int64_t>> quantised_weights(LlamaForCausalLM& model) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& m : model->named_modules()) {
    const auto* proj = dynamic_cast<const ProjectionImpl*>(m.value().get());
    if (proj && proj->quantized()) shapes[m.key() + ".weight" + std::string(kRecordSuffix)] = proj->nf4_shape;
  }
  return shapes;
}

}  // namespace

WeightSlices nf4_weight_slices(WeightSlices inner, LlamaForCausalLM& model) {
  if (!inner) return inner;
  auto shapes = quantised_weights(model);
  if (shapes.empty()) fail("nf4_weight_slices: the model has no NF4-quantised projection (quantize_projections first)");
  return [inner = std::move(inner), shapes = std::move(shapes)](const FlatParam& p, int64_t offset,
                                                                int64_t numel) -> at::Tensor {
    const auto it = shapes.find(p.name);
    if (it == shapes.end()) return inner(p, offset, numel);
    FlatParam source = p;
    source.name = p.name.substr(0, p.name.size() - kRecordSuffix.size());
    source.shape = it->second;
    source.numel = 1;
    for (int64_t d : source.shape) source.numel *= d;
    const auto weight = inner(source, 0, source.numel).reshape(source.shape);
    const auto& tables = quant::nf4_tables(weight.device());
    auto record = at::empty({quant::nf4_record_bytes(source.numel)}, weight.options().dtype(at::kByte));
    if (record.numel() != p.numel)
      fail("nf4_weight_slices: {} has {} bytes, but a {}-element weight's record has {}", p.name, p.numel,
           source.numel, record.numel());
    quant::pack_nf4(quant::quantize_nf4(weight, tables), record);
    return record.narrow(0, offset, numel);
  };
}

}  // namespace agenttune::parallel
