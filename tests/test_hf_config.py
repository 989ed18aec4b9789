"""`--hf-config`: a Hugging Face config.json's fields set the spec's dims, as its
`hf_config` block says; three released models' configs (their published values, written
here) give their published parameter counts."""

from __future__ import annotations

import json

import pytest

from memspec import compile_spec
from memspec.cli import main
from memspec.quantize import Weights
from tests.conftest import SPECS

# meta-llama/Llama-2-7b-hf
LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.31.0.dev0",
    "use_cache": True,
    "vocab_size": 32000,
}
# mistralai/Mistral-7B-v0.1
MISTRAL_7B = {
    "architectures": ["MistralForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mistral",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.34.0.dev0",
    "use_cache": True,
    "vocab_size": 32000,
}
# openai-community/gpt2
GPT2 = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}


def _write(tmp_path, fields: dict, name: str = "config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(fields), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("spec", "fields", "params"),
    [
        ("llama.mspec", LLAMA2_7B, 6_738_415_616),
        ("mistral.mspec", MISTRAL_7B, 7_241_732_096),
        ("gpt2.mspec", GPT2, 124_439_808),
    ],
)
def test_a_released_config_gives_the_published_count(tmp_path, spec, fields, params):
    result = compile_spec(SPECS / spec, hf_config=_write(tmp_path, fields), set={"B": 1})
    assert result.value(result.categories["parameters"].elements) == params
    use = result.hf_config
    assert use.model_type == fields["model_type"]
    # every field is read by a binding or a requirement, or listed as not used
    read = {f for _, _, used in use.dims for f in used}
    assert set(use.unused) | read | set(use.checked) | {"model_type"} == set(fields)
    assert "architectures" in use.checked  # it lists the spec's model


def test_what_a_config_sets_is_in_the_report_and_json(tmp_path, capsys):
    path = _write(tmp_path, MISTRAL_7B)
    args = ["compile", str(SPECS / "mistral.mspec"), "--hf-config", str(path), "--set", "B=1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "KV = 8 (num\\_key\\_value\\_heads)" in out and "W = 4,096 (sliding\\_window)" in out
    assert "Fields not used: bos\\_token\\_id" in out
    assert main([*args, "--format", "json", "--set", "L=2048"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["hf_config"]["dims"]["L"] == 32768  # --set wins over it
    assert doc["values"]["parameters"]["elements"] == 7_241_732_096


def test_a_null_field_takes_the_default(tmp_path):
    """Mistral-7B-v0.2 on: no sliding window (null), so the context's length."""
    fields = {**MISTRAL_7B, "sliding_window": None}
    result = compile_spec(SPECS / "mistral.mspec", hf_config=_write(tmp_path, fields))
    assert dict((k, v) for k, v, _ in result.hf_config.dims)["W"] == 32768


@pytest.mark.parametrize(
    ("spec", "fields", "message"),
    [
        (
            "llama.mspec",
            {k: v for k, v in LLAMA2_7B.items() if k != "intermediate_size"},
            "no field 'intermediate_size', which F needs",
        ),
        ("llama.mspec", {**LLAMA2_7B, "model_type": "qwen2"}, "model_type 'qwen2' is not one"),
        ("llama.mspec", {**LLAMA2_7B, "tie_word_embeddings": True}, "a requirement does not hold"),
        ("llama.mspec", {**LLAMA2_7B, "head_dim": 64}, "a requirement does not hold"),
        ("llama.mspec", {**LLAMA2_7B, "hidden_size": "4096"}, 'is "4096", not a number'),
        ("gpt2.mspec", {**GPT2, "n_embd": 0}, "D must be positive"),
        ("cs336_lm.mspec", LLAMA2_7B, "it has no hf_config block"),
    ],
)
def test_bad_configs_are_clear_errors(tmp_path, capsys, spec, fields, message):
    path = _write(tmp_path, fields)
    assert main(["compile", str(SPECS / spec), "--hf-config", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_a_file_that_is_not_json_is_an_error(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text("{not json", encoding="utf-8")
    assert main(["compile", str(SPECS / "llama.mspec"), "--hf-config", str(path)]) == 2
    assert "config.json:1:2: not JSON" in capsys.readouterr().err
    assert main(["compile", str(SPECS / "llama.mspec"), "--hf-config", str(tmp_path)]) == 2
    assert "cannot read it" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fields", "spec", "params"),
    [(LLAMA2_7B, "llama.mspec", 6_738_415_616), (GPT2, "gpt2.mspec", 124_439_808)],
)
def test_without_a_spec_the_model_type_picks_one(tmp_path, capsys, fields, spec, params):
    path = _write(tmp_path, fields)
    assert main(["compile", "--hf-config", str(path), "--set", "B=1", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["spec"].endswith(spec)
    assert doc["values"]["parameters"]["elements"] == params


def test_a_model_type_no_bundled_spec_reads_is_an_error(tmp_path, capsys):
    path = _write(tmp_path, {**LLAMA2_7B, "model_type": "qwen2"})
    assert main(["compile", "--hf-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no bundled spec reads model_type 'qwen2'" in err and "gpt2, llama, mistral" in err
    assert main(["compile"]) == 2
    assert "compile needs a spec" in capsys.readouterr().err


def test_info_lists_the_model_types_a_spec_reads(capsys):
    assert main(["info", str(SPECS / "mistral.mspec"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["hf_configs"] == ["mistral"]


# quantization_config as transformers writes it: FineGrainedFP8Config() and a QLoRA
# BitsAndBytesConfig (its to_dict(), the fields memspec reads)
FP8 = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
NF4 = {
    "quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
    "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
    "bnb_4bit_compute_dtype": "bfloat16", "llm_int8_skip_modules": None,
}  # fmt: skip


@pytest.mark.parametrize(
    ("quantization", "weights"),
    [
        (FP8, Weights("fp8")),
        (NF4, Weights("nf4", compute="bfloat16", double_quant=True)),
        ({"quant_method": "bitsandbytes", "load_in_8bit": True}, Weights("int8")),
        # null fields take BitsAndBytesConfig's defaults: fp4, float32, no double quant
        (
            {"quant_method": "bitsandbytes", "load_in_4bit": True,
             "bnb_4bit_quant_type": None, "bnb_4bit_compute_dtype": None},
            Weights("fp4", compute="float32", double_quant=False),
        ),
        ({**FP8, "modules_to_not_convert": ["lm_head", "down_proj"]},
         Weights("fp8", skip=("lm_head", "down_proj"))),
    ],
)  # fmt: skip
def test_a_quantized_checkpoint_is_compiled_with_its_weights(tmp_path, quantization, weights):
    # a config.json of quantized weights must not be answered as if they were bfloat16
    path = _write(tmp_path, {**LLAMA2_7B, "quantization_config": quantization})
    result = compile_spec(SPECS / "llama.mspec", hf_config=path, set={"B": 1})
    flag = compile_spec(SPECS / "llama.mspec", hf_config=_write(tmp_path, LLAMA2_7B, "plain.json"),
                        set={"B": 1}, weights=weights)  # fmt: skip
    assert result.config.weights == weights
    assert result.categories["parameters"].bytes == flag.categories["parameters"].bytes
    assert result.hf_config is not None and "quantization_config" not in result.hf_config.unused
    # --weights wins over the config's, as --set does over its dims
    ours = compile_spec(SPECS / "llama.mspec", hf_config=path, set={"B": 1},
                        weights=Weights("int8"))  # fmt: skip
    assert ours.config.weights == Weights("int8")


@pytest.mark.parametrize(
    ("quantization", "message"),
    [
        ({"quant_method": "gptq", "bits": 4}, "quant_method 'gptq' is not modelled"),
        ({**FP8, "weight_block_size": [64, 64]}, "FP8 with weight_block_size [64, 64]"),
        ({"quant_method": "bitsandbytes"}, "neither load_in_4bit nor load_in_8bit"),
        ("fp8", "quantization_config is not a JSON object"),
        ({**NF4, "bnb_4bit_quant_type": "nf5"}, "quantization_config: --weights takes one of"),
    ],
)
def test_a_quantization_memspec_does_not_model_is_refused(tmp_path, capsys, quantization, message):
    path = _write(tmp_path, {**LLAMA2_7B, "quantization_config": quantization})
    assert main(["compile", "--hf-config", str(path), "--set", "B=1"]) == 2
    assert message in capsys.readouterr().err


def test_a_config_of_another_architecture_is_refused(tmp_path, capsys):
    # the same model_type with a classification head instead of lm_head
    fields = {**LLAMA2_7B, "architectures": ["LlamaForSequenceClassification"]}
    path = _write(tmp_path, fields)
    assert main(["compile", "--hf-config", str(path), "--set", "B=1"]) == 2
    err = capsys.readouterr().err
    assert "architectures LlamaForSequenceClassification do not include LlamaForCausalLM" in err
    no_list = _write(tmp_path, {**LLAMA2_7B, "architectures": "LlamaForCausalLM"}, "b.json")
    assert main(["compile", "--hf-config", str(no_list), "--set", "B=1"]) == 2
    assert "architectures is a list of class names" in capsys.readouterr().err
    # a config without the field (older exports) is read as before
    plain = {k: v for k, v in LLAMA2_7B.items() if k != "architectures"}
    result = compile_spec(SPECS / "llama.mspec", hf_config=_write(tmp_path, plain, "c.json"))
    assert result.hf_config is not None and "architectures" not in result.hf_config.unused
