// Every differentiable op, one header per family. Models include this.
#pragma once
#include "autograd/attention.h"
#include "autograd/autocast.h"
#include "autograd/elementwise.h"
#include "autograd/graph.h"
#include "autograd/indexing.h"
#include "autograd/linalg.h"
#include "autograd/loss.h"
#include "autograd/nn.h"
#include "autograd/reduce.h"
#include "autograd/views.h"
#include "autograd/vision.h"
