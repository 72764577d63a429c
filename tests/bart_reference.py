#!/usr/bin/env python3
"""Reference outputs of transformers' BartForConditionalGeneration for tests/bart_import_test.sh (never used by dgr).

Builds a randomly initialised BART of the given shape (every weight, norm and final_logits_bias perturbed so
that no tensor is left at a trivial value), writes it with save_pretrained (model.safetensors and config.json),
and writes reference.safetensors: a padded source batch, targets, the encoder output, the teacher-forced logits,
and the log-probabilities of three steps of cached decoding (past_key_values) for source row 0.
Usage: bart_reference.py OUT_DIR tiny|base   (Debian's python3-torch; transformers from the venv, appended to
sys.path after Debian's packages so that Debian's numpy stays the one torch was built with)
       bart_reference.py DIR from-pretrained: the references only, of the model in DIR as from_pretrained loads it
       (a model dgr exported with `dgr export --format hf`)
"""
import glob, json, os, sys

venv = os.environ.get("DGR_VENV", "/opt/dgr-venv")
sys.path += glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))
import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import BartConfig, BartForConditionalGeneration

SHAPES = {
    "tiny": dict(vocab_size=320, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64),
    "base": dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024),
}


def main():
    out, shape = sys.argv[1], sys.argv[2]
    if shape == "from-pretrained":
        model = BartForConditionalGeneration.from_pretrained(out).eval()
        config = model.config
    else:
        torch.manual_seed(20)
        config = BartConfig(**SHAPES[shape], dropout=0.1, attention_dropout=0.1, activation_dropout=0.1)
        model = BartForConditionalGeneration(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.add_(torch.randn_like(p) * 0.05)
            model.final_logits_bias.normal_(0, 0.5)
        model.eval()
        model.save_pretrained(out)
    if shape == "tiny":  # a BART tokenizer of exactly vocab_size tokens beside it (<mask> last, as in BART)
        from tokenizers import ByteLevelBPETokenizer
        bpe = ByteLevelBPETokenizer(add_prefix_space=False)
        bpe.train_from_iterator([open(__file__, encoding="utf-8").read()] * 3, vocab_size=config.vocab_size - 1,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False)
        bpe.save_model(out)
        vocab = json.load(open(os.path.join(out, "vocab.json"), encoding="utf-8"))
        vocab["<mask>"] = len(vocab)
        assert len(vocab) == config.vocab_size, len(vocab)
        json.dump(vocab, open(os.path.join(out, "vocab.json"), "w", encoding="utf-8"), ensure_ascii=False)
    v = config.vocab_size
    g = torch.Generator().manual_seed(7)
    src = torch.randint(4, v, (2, 9), generator=g)
    src[:, 0], src[0, -1] = 0, 2          # <s> ... </s>
    src[1, 6], src[1, 7:] = 2, 1          # row 1: shorter, padded on the right with <pad> = 1
    src_mask = (src != 1).long()
    tgt = torch.randint(4, v, (2, 5), generator=g)
    tgt[0, -1], tgt[1, 3], tgt[1, 4] = 2, 2, 1
    dec_in = torch.cat([torch.full((2, 1), 2), tgt[:, :-1]], 1)  # decoder_start_token_id </s> = 2
    with torch.no_grad():
        enc = model.model.encoder(input_ids=src, attention_mask=src_mask).last_hidden_state
        logits = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=dec_in).logits
        steps, past = [], None
        for token in [2, int(tgt[0, 0]), int(tgt[0, 1])]:
            r = model(input_ids=src[:1], attention_mask=src_mask[:1], decoder_input_ids=torch.tensor([[token]]),
                      past_key_values=past, use_cache=True)
            past = r.past_key_values
            steps.append(torch.log_softmax(r.logits[0, -1].double(), -1).float())
    save_file({"src": src.numpy().astype(np.int64), "tgt": tgt.numpy().astype(np.int64),
               "encoder_out": enc.numpy(), "logits": logits.numpy(), "step_log_probs": torch.stack(steps).numpy()},
              os.path.join(out, "reference.safetensors"))
    print(f"bart_reference: {shape}, {sum(p.numel() for p in model.parameters())} parameters, torch {torch.__version__}")


if __name__ == "__main__":
    main()
