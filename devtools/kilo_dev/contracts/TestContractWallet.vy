# pragma version 0.4.3
"""
@title TestContractWallet
@notice A smart-contract wallet for tests on a local chain only: ERC-1271's isValidSignature accepts a 65-byte
        signature (r, s, v) of the hash made by the wallet's owner key.
"""

MAGIC: constant(bytes4) = 0x1626ba7e
INVALID: constant(bytes4) = 0xffffffff

owner: public(address)


@deploy
def __init__(wallet_owner: address):
    self.owner = wallet_owner


@external
@view
def isValidSignature(digest: bytes32, signature: Bytes[65]) -> bytes4:
    if len(signature) != 65:
        return INVALID
    r: uint256 = convert(slice(signature, 0, 32), uint256)
    s: uint256 = convert(slice(signature, 32, 32), uint256)
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    if ecrecover(digest, v, r, s) == self.owner:
        return MAGIC
    return INVALID
