"""What every tiny-model benchmark shares: its models come from a zoo built by ``prepare()``
(an object with ``tokenizer``, ``base``, ``target`` paths and ``template_args``)."""

from atwu_plugin.zoo.loading import load_tokenizer


class ZooBackedBenchmark:
    """Subclasses set ``self.zoo = None`` and implement ``prepare()`` (build or load the zoo,
    return ``self``); the paths below then come from the zoo, built on first use."""

    zoo = None

    def prepare(self, log=print):
        raise NotImplementedError

    @property
    def model_path(self) -> str:
        return self.prepare().zoo.target

    @property
    def aux_model_path(self) -> str:
        # every zoo's base model never saw the benchmark's forget data: the reference model
        return self.prepare().zoo.base

    @property
    def template_args(self) -> dict:
        return self.prepare().zoo.template_args

    def tokenizer(self):
        return load_tokenizer(self.prepare().zoo.tokenizer)
