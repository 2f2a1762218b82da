# pragma version 0.4.3
"""
@title TestBatchPay
@notice Pays several amounts of an ERC-20 to one receiver in one transaction (one Transfer log each, from the
        caller, who approved this contract first), for tests on a local chain only.
"""

from ethereum.ercs import IERC20


@external
def pay(token: IERC20, receiver: address, amounts: DynArray[uint256, 8]):
    for amount: uint256 in amounts:
        assert extcall token.transferFrom(msg.sender, receiver, amount, default_return_value=True)
