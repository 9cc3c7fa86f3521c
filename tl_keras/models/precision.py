"""Float32 copies of models trained under a mixed-precision policy, and
rebuilding a model from an edited config with the same weights."""

def float32_copy(model):
  """`model` rebuilt under the float32 policy, with the same weights.

  Models trained under `mixed_float16` must be converted from a float32 copy
  (converting float16 compute graphs fails or loses accuracy).
  """
  if all(layer.dtype_policy.name == "float32"
         for layer in all_layers(model)):
    return model
  return rebuilt(model, with_float32_policy(model.get_config()))


def rebuilt(model, config):
  """A model of `model`'s class from `config`, with `model`'s weights."""
  clone = model.__class__.from_config(config)
  clone.set_weights(model.get_weights())
  return clone


def all_layers(model):
  for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
    yield layer


def with_float32_policy(config):
  """A layer config tree with every dtype policy replaced by float32."""
  if isinstance(config, dict):
    if config.get("class_name") == "DTypePolicy":
      return {**config, "config": {**config["config"], "name": "float32"}}
    return {k: ("float32" if k == "dtype" and isinstance(v, str)
                and "mixed" in v else with_float32_policy(v))
            for k, v in config.items()}
  if isinstance(config, list):
    return [with_float32_policy(v) for v in config]
  return config
