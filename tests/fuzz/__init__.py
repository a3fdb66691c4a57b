"""Fuzzing the engine's REST API: a real engine in a private network
namespace, schemathesis over the served OpenAPI document, and a targeted
fuzzer of hostile request bodies."""
