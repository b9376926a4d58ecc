"""Language for MetaWorld's 50 tasks (MetaWorld ships none): an instruction, the object the expert
reaches for, what it then does, and whether it grasps — the pieces of the subtask segments."""

from __future__ import annotations

from typing import NamedTuple


class TaskText(NamedTuple):
    instruction: str
    obj: str  # "reach the <obj>", "grasp the <obj>"
    then: str  # the phase after contact or grasp
    grasps: bool  # the expert closes the gripper on the object


TASKS: dict[str, TaskText] = {
    "assembly": TaskText("put the ring onto the peg", "ring", "place the ring on the peg", True),
    "basketball": TaskText("dunk the ball into the basket", "ball", "carry the ball into the basket", True),
    "bin-picking": TaskText("move the cube into the other bin", "cube", "carry the cube to the other bin", True),
    "box-close": TaskText("close the box with its lid", "lid", "put the lid on the box", True),
    "button-press-topdown": TaskText("press the button from the top", "button", "press the button down", False),
    "button-press-topdown-wall": TaskText(
        "press the button from the top behind the wall", "button", "press the button down", False
    ),
    "button-press": TaskText("press the button", "button", "push the button in", False),
    "button-press-wall": TaskText("press the button behind the wall", "button", "push the button in", False),
    "coffee-button": TaskText(
        "press the button on the coffee machine", "coffee machine button", "push the button in", False
    ),
    "coffee-pull": TaskText("pull the mug out from the coffee machine", "mug", "pull the mug back", True),
    "coffee-push": TaskText("push the mug under the coffee machine", "mug", "push the mug under the machine", True),
    "dial-turn": TaskText("turn the dial", "dial", "rotate the dial", False),
    "disassemble": TaskText("take the ring off the peg", "ring", "lift the ring off the peg", True),
    "door-close": TaskText("close the door", "door handle", "swing the door shut", False),
    "door-lock": TaskText("lock the door", "door lock", "turn the lock down", False),
    "door-open": TaskText("open the door", "door handle", "pull the door open", False),
    "door-unlock": TaskText("unlock the door", "door lock", "turn the lock up", False),
    "hand-insert": TaskText("put the hand into the hole", "hole", "push the hand into the hole", False),
    "drawer-close": TaskText("close the drawer", "drawer handle", "push the drawer shut", False),
    "drawer-open": TaskText("open the drawer", "drawer handle", "pull the drawer open", False),
    "faucet-open": TaskText("turn the faucet on", "faucet handle", "turn the handle to open", False),
    "faucet-close": TaskText("turn the faucet off", "faucet handle", "turn the handle to close", False),
    "hammer": TaskText("hammer the nail into the wall", "hammer", "hit the nail with the hammer", True),
    "handle-press-side": TaskText("press the handle down from the side", "handle", "press the handle down", False),
    "handle-press": TaskText("press the handle down", "handle", "press the handle down", False),
    "handle-pull-side": TaskText("pull the handle up from the side", "handle", "pull the handle up", False),
    "handle-pull": TaskText("pull the handle up", "handle", "pull the handle up", False),
    "lever-pull": TaskText("pull the lever up", "lever", "pull the lever up", False),
    "pick-place-wall": TaskText(
        "pick up the puck and place it at the goal behind the wall",
        "puck",
        "carry the puck over the wall to the goal",
        True,
    ),
    "pick-out-of-hole": TaskText("pick the puck out of the hole", "puck", "lift the puck to the goal", True),
    "pick-place": TaskText("pick up the puck and place it at the goal", "puck", "move the puck to the goal", True),
    "plate-slide": TaskText("slide the plate into the goal", "plate", "slide the plate into the goal", False),
    "plate-slide-side": TaskText("slide the plate sideways into the goal", "plate", "slide the plate sideways", False),
    "plate-slide-back": TaskText("slide the plate back into the goal", "plate", "slide the plate back", False),
    "plate-slide-back-side": TaskText(
        "slide the plate back sideways into the goal", "plate", "slide the plate back sideways", False
    ),
    "peg-insert-side": TaskText(
        "insert the peg into the hole from the side", "peg", "push the peg into the hole", True
    ),
    "peg-unplug-side": TaskText("unplug the peg from the side", "peg", "pull the peg out", True),
    "soccer": TaskText("kick the ball into the goal", "ball", "push the ball into the goal", False),
    "stick-push": TaskText("push the thermos with the stick", "stick", "push the thermos with the stick", True),
    "stick-pull": TaskText("pull the thermos with the stick", "stick", "pull the thermos with the stick", True),
    "push": TaskText("push the puck to the goal", "puck", "push the puck to the goal", False),
    "push-wall": TaskText("push the puck around the wall to the goal", "puck", "push the puck past the wall", False),
    "push-back": TaskText("push the puck back to the goal", "puck", "push the puck back to the goal", False),
    "reach": TaskText("reach the goal position", "goal", "move the hand to the goal", False),
    "reach-wall": TaskText("reach the goal behind the wall", "goal", "move the hand over the wall to the goal", False),
    "shelf-place": TaskText("place the block on the shelf", "block", "put the block on the shelf", True),
    "sweep-into": TaskText("sweep the puck into the hole", "puck", "sweep the puck into the hole", False),
    "sweep": TaskText("sweep the puck off the table", "puck", "sweep the puck off the edge", False),
    "window-open": TaskText("open the window", "window handle", "slide the window open", False),
    "window-close": TaskText("close the window", "window handle", "slide the window shut", False),
}

# MetaWorld's MT10 (the first ten MT50 tasks used as a multi-task benchmark).
MT10 = [
    "reach",
    "push",
    "pick-place",
    "door-open",
    "drawer-open",
    "drawer-close",
    "button-press-topdown",
    "peg-insert-side",
    "window-open",
    "window-close",
]
MT50 = list(TASKS)
