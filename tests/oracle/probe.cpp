// llama-splice-probe: load a GGUF with real llama.cpp (CPU only), run a prompt,
// greedy-generate N tokens and print JSON {"tokens":[...],"logits":[[...],...]}.
//
// usage: llama-splice-probe MODEL.gguf [PROMPT (default "Hello world")] [N (default 8)]
//        env LLAMA_SPLICE_PROBE_VERBOSE=1 shows llama.cpp's log on stderr.
//
// Deterministic: 1 thread, fixed n_ctx, no sampling randomness (argmax with lowest id on ties).
// logits[i] are the full-vocab logits used to choose tokens[i]; non-finite values print as null.
#include "llama.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static bool g_verbose = false;

static void log_cb(enum ggml_log_level level, const char * text, void * /*user*/) {
    if (g_verbose || level == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

int main(int argc, char ** argv) {
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL.gguf [PROMPT] [N_GENERATE]\n", argv[0]);
        return 2;
    }
    const char * env = getenv("LLAMA_SPLICE_PROBE_VERBOSE");
    g_verbose = env && *env && strcmp(env, "0") != 0;

    const std::string path   = argv[1];
    const std::string prompt = argc >= 3 ? argv[2] : "Hello world";
    int n_gen = 8;
    if (argc >= 4) {
        char * end = nullptr;
        long v = strtol(argv[3], &end, 10);
        if (!end || *end || v < 0 || v > 4096) {
            fprintf(stderr, "error: bad N_GENERATE '%s'\n", argv[3]);
            return 2;
        }
        n_gen = (int) v;
    }

    llama_log_set(log_cb, nullptr);
    llama_backend_init();

    llama_model_params mparams = llama_model_default_params();
    mparams.n_gpu_layers = 0;
    // No extra buffer types (weight repacking, AMX): on a CPU with AMX the AMX buffer type
    // leaves graph nodes with no backend (GGML_ASSERT(*cur_backend_id != -1) in
    // ggml_backend_sched_split_graph, b11434), and the oracle must run on every machine.
    mparams.use_extra_bufts = false;

    llama_model * model = llama_model_load_from_file(path.c_str(), mparams);
    if (!model) {
        fprintf(stderr, "error: failed to load model '%s'\n", path.c_str());
        llama_backend_free();
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    // tokenize
    std::vector<llama_token> toks(prompt.size() + 16);
    int n_tok = llama_tokenize(vocab, prompt.c_str(), (int) prompt.size(), toks.data(), (int) toks.size(), true, true);
    if (n_tok < 0) {
        toks.resize(-n_tok);
        n_tok = llama_tokenize(vocab, prompt.c_str(), (int) prompt.size(), toks.data(), (int) toks.size(), true, true);
    }
    if (n_tok <= 0) {
        fprintf(stderr, "error: prompt tokenized to %d tokens\n", n_tok);
        llama_model_free(model);
        llama_backend_free();
        return 1;
    }
    toks.resize(n_tok);

    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx           = (uint32_t) (n_tok + n_gen + 16);
    cparams.n_batch         = cparams.n_ctx;
    cparams.n_ubatch        = cparams.n_ctx;
    cparams.n_seq_max       = 1;
    cparams.n_threads       = 1;
    cparams.n_threads_batch = 1;
    cparams.no_perf         = true;

    llama_context * ctx = llama_init_from_model(model, cparams);
    if (!ctx) {
        fprintf(stderr, "error: failed to create context for '%s'\n", path.c_str());
        llama_model_free(model);
        llama_backend_free();
        return 1;
    }

    std::vector<llama_token> out;
    std::vector<std::vector<float>> all_logits;

    llama_batch batch = llama_batch_get_one(toks.data(), (int32_t) toks.size());
    llama_token cur = 0;
    for (int i = 0; i < n_gen; i++) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "error: llama_decode failed at step %d\n", i);
            llama_free(ctx);
            llama_model_free(model);
            llama_backend_free();
            return 1;
        }
        const float * logits = llama_get_logits_ith(ctx, -1);
        if (!logits) {
            fprintf(stderr, "error: no logits at step %d\n", i);
            return 1;
        }
        int best = 0;
        for (int t = 1; t < n_vocab; t++) {
            if (logits[t] > logits[best]) {
                best = t;
            }
        }
        all_logits.emplace_back(logits, logits + n_vocab);
        out.push_back(best);
        cur   = best;
        batch = llama_batch_get_one(&cur, 1);
    }

    // JSON
    printf("{\"prompt_tokens\":[");
    for (size_t i = 0; i < toks.size(); i++) {
        printf(i ? ",%d" : "%d", toks[i]);
    }
    printf("],\"tokens\":[");
    for (size_t i = 0; i < out.size(); i++) {
        printf(i ? ",%d" : "%d", out[i]);
    }
    printf("],\"logits\":[");
    for (size_t i = 0; i < all_logits.size(); i++) {
        printf(i ? ",[" : "[");
        for (size_t t = 0; t < all_logits[i].size(); t++) {
            const float v = all_logits[i][t];
            if (t) {
                putchar(',');
            }
            if (std::isfinite(v)) {
                printf("%.9g", (double) v);
            } else {
                printf("null"); // JSON has no NaN/Inf
            }
        }
        printf("]");
    }
    printf("]}\n");

    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
