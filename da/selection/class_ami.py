"""ClassAMI (Musgrave et al., ECCV 2022): agreement of the predictions with the target's own clusters."""

from __future__ import annotations

import torch.nn.functional as F

from da.selection.base import EpochOutputs, Setting, Validator, register


@register
class ClassAMI(Validator):
    r"""score = AMI(k-means_C(z_t), argmax p_t): the adjusted mutual information between the C-way k-means
    clustering of the L2-normalised target features and the predicted classes (C classes; k-means seeded,
    ``class_ami_restarts`` restarts).  High when the classifier's decision follows the cluster structure of the target."""

    name = "class_ami"
    settings = (Setting("class_ami_restarts", int, 3, "k-means restarts (the best of them is kept)", low=1,
                        hash="unless_default"),)

    def score(self, out: EpochOutputs) -> float:
        from sklearn.cluster import KMeans  # heavy: imported when used
        from sklearn.metrics import adjusted_mutual_info_score

        tp = out.target_train
        z = F.normalize(tp.features.double(), dim=1).numpy()
        clusters = KMeans(n_clusters=tp.logits.shape[1], n_init=self.cfg.class_ami_restarts, random_state=0).fit_predict(z)
        return float(adjusted_mutual_info_score(clusters, tp.logits.argmax(1).numpy()))
