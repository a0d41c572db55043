"""KFP component: prune the student's vocabulary to the word pieces its domain uses."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output


@dsl.component(base_image="shrink-prune-vocabulary", install_kfp_package=False)
def prune_vocabulary(
    model: Input[Model], dataset: Input[Dataset], vocabulary: dict, out: Output[Model], metrics: Output[Metrics]
):
    """Keep the embedding rows of the pieces the training texts use (and every single character); renumber the rest.

    Args:
        model: The PyTorch FP32 student (select_student's ``best``).
        dataset: The prepared dataset; its train and validation splits (and the student's transfer set,
            made again from its recorded settings) choose the vocabulary, never its test split.
        vocabulary: The ``vocabulary`` section of the pipeline config (enabled, sources, min_count).
        out: The PyTorch FP32 student with the pruned embeddings, tokenizer and config, parent = ``model``
            (a copy of ``model`` when ``vocabulary.enabled`` is false).
        metrics: Rows before / after / removed, removed fraction, embedding and weight-file MB before and
            after, texts tokenized, logit parity with the parent on source texts.
    """
    from shrink.config import VocabularyConfig, from_dict
    from shrink.kfp_io import component_main, publish_model
    from shrink.vocab import prune_vocabulary as run

    with component_main("prune_vocabulary", metrics):
        cfg = from_dict(VocabularyConfig, vocabulary, "vocabulary")
        meta = run(model.path, dataset.path, out.path, cfg, parent_uri=model.uri)
        publish_model(meta, out, metrics)
