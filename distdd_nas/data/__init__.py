"""Datasets, federated partitions and label noise: pure code, tensors and arrays in and out."""

from distdd_nas.data.datasets import DATASETS, load_dataset, stratified_sample
from distdd_nas.data.files import read_idx
from distdd_nas.data.images import DatasetSplits, ImageDataset
from distdd_nas.data.noise import NOISE_KINDS, NoiseRecord, apply_label_noise
from distdd_nas.data.partition import (
    PARTITIONERS,
    DirichletPartitioner,
    FederatedSplit,
    FlwrDatasetsPartitioner,
    IidPartitioner,
    Partitioner,
    QuantitySkewPartitioner,
    ShardPartitioner,
    make_partitioner,
)
from distdd_nas.data.torchvision_sources import FASHION_MNIST_SYSTEM_DIRS

__all__ = [
    "DATASETS",
    "FASHION_MNIST_SYSTEM_DIRS",
    "NOISE_KINDS",
    "PARTITIONERS",
    "DatasetSplits",
    "DirichletPartitioner",
    "FederatedSplit",
    "FlwrDatasetsPartitioner",
    "IidPartitioner",
    "ImageDataset",
    "NoiseRecord",
    "Partitioner",
    "QuantitySkewPartitioner",
    "ShardPartitioner",
    "apply_label_noise",
    "load_dataset",
    "make_partitioner",
    "read_idx",
    "stratified_sample",
]
