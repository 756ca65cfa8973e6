"""The 280-character ConvMixer from the paper's tweet, kept verbatim and executed as-is.

`TWEET` is the exact source; `ConvMixer` is the function that source defines, obtained by running
it with `from torch.nn import *` in scope, so there is no second copy of the model to drift apart.
Arguments: h = width, d = depth, k = depthwise kernel size, p = patch size, n = number of classes.
"""

from collections.abc import Callable

import torch.nn

TWEET = """def ConvMixer(h,d,k,p,n):
 S,C,A=Sequential,Conv2d,lambda x:S(x,GELU(),BatchNorm2d(h))
 R=type('',(S,),{'forward':lambda s,x:s[0](x)+x})
 return S(A(C(3,h,p,p)),*[S(R(A(C(h,h,k,groups=h,padding=k//2))),A(C(h,h,1)))for i in range(d)],AdaptiveAvgPool2d(1),Flatten(),Linear(h,n))"""  # noqa: E501 (the tweet is kept verbatim)

assert len(TWEET) <= 280, len(TWEET)


def _define_from_tweet() -> Callable[..., torch.nn.Sequential]:
    namespace: dict = {}
    exec("from torch.nn import *", namespace)  # the scope the tweet assumes
    exec(TWEET, namespace)
    return namespace["ConvMixer"]


ConvMixer = _define_from_tweet()
