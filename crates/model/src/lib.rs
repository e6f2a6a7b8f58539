//! Transformer models for DP training: BERT and Llama families on candle, trainable units,
//! per-example records for the DP engine, Hugging Face and GGUF I/O.
