# pragma version 0.4.3
"""
@title TestAggregator
@notice A Chainlink-compatible price feed (AggregatorV3Interface) for tests on a local chain only: anyone may set the
        answer and its timestamp.
"""

decimals: public(uint8)
description: public(String[64])
version: public(uint256)

round: uint80
answer: int256
started: uint256
updated: uint256


@deploy
def __init__(feed_decimals: uint8, feed_description: String[64], initial_answer: int256):
    self.decimals = feed_decimals
    self.description = feed_description
    self.version = 4
    self.round = 1
    self.answer = initial_answer
    self.started = block.timestamp
    self.updated = block.timestamp


@external
def setAnswer(new_answer: int256, updated_at: uint256):
    """@notice A new round: its answer and when it was updated (0: now)."""
    self.round += 1
    self.answer = new_answer
    stamp: uint256 = updated_at
    if stamp == 0:
        stamp = block.timestamp
    self.started = stamp
    self.updated = stamp


@view
@external
def latestRoundData() -> (uint80, int256, uint256, uint256, uint80):
    return (self.round, self.answer, self.started, self.updated, self.round)


@view
@external
def latestAnswer() -> int256:
    return self.answer
