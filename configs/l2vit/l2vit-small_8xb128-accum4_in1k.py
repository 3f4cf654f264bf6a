# L²ViT-S on ImageNet-1k (official top-1 84.1). The official repository
# does not state the drop path of T and S; 0.3 is used here as for B.
_base_ = './l2vit-tiny_8xb128-accum4_in1k.py'

model = dict(backbone=dict(arch='small', drop_path_rate=0.3))
