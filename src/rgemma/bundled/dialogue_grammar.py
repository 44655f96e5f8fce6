"""What the dialogues of the bundled corpus say (`dialogues.py`): requests, questions, answers.

Everything here is data, written for this project. Templates use the story format of
`grammar.py`: `[a|b]` picks one alternative, `{slot}` is filled from the story's cast (`{Slot}`
with a capital letter). Besides the story slots, `{topic}` is the plot's TOPIC and `{moral}`
what the hero learned, as the story itself says it.

Every answer about a story is filled from the cast and plot the story was drawn from, so it is
true of that story: the questions of a plot only ask what every telling of the plot states.
"""

PERSONA = (
    "I am rgemma-tiny, a very small language model. I tell short stories for children, and I can "
    "answer simple questions about them."
)
GREETING_REPLY = "Hello! I am rgemma-tiny. I can tell you a story. What should it be about?"
THANKS_REPLY = "I am glad you liked it! Would you like another story?"
BYE_REPLY = "Goodbye! Come back for another story soon."
OFF_TOPIC_REPLY = (
    "I am only a tiny story model, so I don't know that. But I can tell you a story! What should it be about?"
)

GREETINGS = (
    "Hello",
    "Hello!",
    "hello",
    "Hi",
    "Hi!",
    "hi",
    "Hi there!",
    "Hey!",
    "hey",
    "Good morning!",
    "Good evening.",
    "Hello, how are you?",
    "Hi, how are you today?",
)
WHO_ARE_YOU = (
    "Who are you?",
    "who are you?",
    "Who are you",
    "What are you?",
    "What is your name?",
    "What's your name?",
    "What can you do?",
    "Tell me about yourself.",
    "Are you a robot?",
    "Who made you?",
)
THANKS = ("Thank you!", "Thanks!", "thanks", "Thank you.", "That was a nice story.", "I liked that story!")
BYES = ("Bye!", "Goodbye.", "bye", "Good night!", "See you later!")
OFF_TOPIC = (
    "What is 2 + 2?",
    "What is 7 times 8?",
    "How much is 100 - 37?",
    "What is the capital of France?",
    "What time is it?",
    "What is the weather like today?",
    "Can you help me with my homework?",
    "Write a Python program that prints 1 to 10.",
    "How far away is the moon?",
    "What is the date today?",
    "Translate 'good morning' into German.",
    "Who won the game last night?",
    "What does HTML mean?",
    "Is it going to rain tomorrow?",
    "What is the square root of 144?",
    "Send an email to sam@example.com.",
    "How do I fix my car?",
    "Explain how a computer works.",
    "What is #1 on the charts?",
    "Can you buy me a toy for $5?",
    "What year is it?",
    "How many legs does a spider have?",
    "Solve x^2 = 16.",
    "Give me a recipe for pizza (quick!).",
)
SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a friendly storyteller for children.",
    "You are rgemma-tiny.",
    "You tell short, simple stories.",
    "Be kind and keep your answers short.",
    "Answer the user's questions.",
    "You are a helpful assistant. Answer in simple words.",
)

# Asking for a story. {about} is one of ABOUT's ways, which name what the story holds.
REQUESTS = (
    "Tell me a story about {about}.",
    "Tell me a story about {about}.",
    "Can you tell me a story about {about}?",
    "Please tell me a story about {about}.",
    "Write a story about {about}.",
    "I want a story about {about}.",
    "Tell me a bedtime story about {about}.",
    "Make up a story about {about}.",
    "Could you tell me a short story about {about}?",
    "Tell a story about {about}.",
)
PLAIN_REQUESTS = (
    "Tell me a story.",
    "Tell me a story, please.",
    "Can you tell me a story?",
    "I want to hear a story.",
    "Write a short story.",
    "Tell me a bedtime story.",
    "Yes, please tell me a story.",
)
ABOUT = (
    "{a_kind} named {hero}",
    "{a_kind} named {hero}",
    "{a_kind} named {hero}",
    "{a_kind}",
    "{a_kind}",
    "{hero}",
    "{topic}",
)
ABOUT_ANIMAL = "{hero} the {kind}"
# A told story opens by saying what it is about: the request's words, or for a plain request
# the hero the story then introduces.
LEAD_INS = (
    "Here is a story about {about}.",
    "Here is a story about {about}.",
    "Sure! Here is a story about {about}.",
)
PLAIN_ABOUT = "{a_kind} named {hero}"
ANOTHER = ("Tell me another story.", "Another one, please!", "Can you tell me one more story?")

# A story given in the user's turn, with a request about it.
WITH_STORY = (
    "{story}\n\n{ask}",
    "{story}\n\n{ask}",
    "Read this story.\n\n{story}\n\n{ask}",
    "Here is a story:\n\n{story}\n\n{ask}",
    "{ask}\n\n{story}",
)
CONTINUE = (
    "Continue this story:\n\n{part}",
    "Finish this story.\n\n{part}",
    "{part}\n\nWhat happens next?",
    "{part}\n\nPlease continue the story.",
    "Can you finish this story?\n\n{part}",
)
SUMMARIZE = (
    "Summarize the story.",
    "Summarize this story.",
    "Can you summarize it?",
    "What is the story about?",
    "Tell me the story in a few words.",
    "What happened in the story?",
)

# Questions that every story answers: (ways to ask, answer).
WHO = (
    "[Who is the story about?|Who is the story about?|Who is the main character?|Who is this story about?]",
    "The story is about {hero}, {a_hero}.",
)
ANIMAL_KIND = ("[What kind of animal is {hero}?|What animal is {hero}?]", "{Hero} is {a_kind}.")
CHILD_KIND = ("Is {hero} a boy or a girl?", "{Hero} is a {kind}.")
FRIEND = ("[Who is {hero}'s friend?|What is the name of {hero}'s friend?]", "{Hero}'s friend is {friend}.")
MORAL = (
    "[What is the moral of the story?|What did {hero} learn?|What is the lesson of the story?]",
    "{Hero} learned that {moral}.",
)
FEEL = "[How did {hero} feel?|How did {hero} feel in the story?]"

# Per plot: what a request for it says (`topic`), a summary, how the hero felt, whether a
# friend takes part, and questions of its own. Each holds for every telling of the plot.
PLOTS = {
    "lost": {
        "topic": "a lost {obj}",
        "summary": "{Hero} lost {his} {obj} {at_place}. {Friend} helped {him} look for it, and they "
        "found it {spot3}.",
        "feel": "{Hero} felt sad when {he} lost {his} {obj}, and very happy when they found it.",
        "friend": True,
        "questions": (
            ("What did {hero} lose?", "{Hero} lost {his} {objadj} {obj}."),
            ("Where did they find the {obj}?", "They found it {spot3}."),
            ("[Who helped {hero}?|Who helped {hero} look for it?]", "{Friend} helped {hero} look for it."),
            ("Where did {hero} go?", "{Hero} went to {place}."),
        ),
    },
    "share": {
        "topic": "sharing",
        "summary": "{Hero} had {a_toy} and did not want to share it with {friend}. Then {he} saw that "
        "{friend} was sad, and they took turns.",
        "feel": "At first {hero} did not want to share, but {he} felt bad when {friend} was sad. "
        "Sharing made them both happy.",
        "friend": True,
        "questions": (
            ("What toy did {hero} have?", "{Hero} had {a_toy}."),
            (
                "Did {hero} share?",
                "Yes. At first {he} said no, but then {he} shared {his} {obj} with {friend}.",
            ),
            ("Who did {hero} share with?", "{Hero} shared {his} {obj} with {friend}."),
        ),
    },
    "fear": {
        "topic": "being brave",
        "summary": "{Hero} was scared of {fear}. {His} {parent} helped {him} be brave, and in the end "
        "{hero} was not scared anymore.",
        "feel": "{Hero} was scared at first, but in the end {he} felt brave.",
        "friend": False,
        "questions": (
            ("What was {hero} scared of?", "{Hero} was scared of {fear}."),
            ("Who helped {hero}?", "{Hero}'s {parent} helped {him} be brave."),
        ),
    },
    "stuck": {
        "topic": "a {stuck_obj} stuck in a tree",
        "summary": "{Hero}'s {stuck_obj} got stuck in a tall tree. {Friend} helped {him} get it down, "
        "and they played together.",
        "feel": "{Hero} felt sad when {his} {stuck_obj} got stuck, and happy when it came down.",
        "friend": True,
        "questions": (
            ("What got stuck in the tree?", "{Hero}'s {stuck_obj} got stuck in the tree."),
            ("Who helped {hero}?", "{Friend} helped {hero} get the {stuck_obj} down."),
            ("Where was {hero}?", "{Hero} was {at_place}."),
        ),
    },
    "gift": {
        "topic": "a present for {his} {parent}",
        "summary": "{Hero} made {a_craft} for {his} {parent}. It was not perfect, but {his} {parent} "
        "loved it.",
        "feel": "{Hero} was sad when the {craft} went wrong, but {he} was happy when {his} {parent} "
        "loved it.",
        "friend": False,
        "questions": (
            ("What did {hero} make?", "{Hero} made {a_craft} for {his} {parent}."),
            ("Who was the present for?", "The present was for {hero}'s {parent}."),
        ),
    },
    "food": {
        "topic": "trying new food",
        "summary": "{Hero} did not want to eat {veg}. {His} {parent} asked {him} to try one bite, and "
        "{hero} found out that they were good.",
        "feel": "{Hero} did not want to try the {veg} at first, but then {he} liked them.",
        "friend": False,
        "questions": (
            ("What food did {hero} not like?", "{Hero} did not like {veg}."),
            ("Did {hero} like the {veg} in the end?", "Yes. {Hero} tried one bite, and {he} liked them."),
        ),
    },
    "explore": {
        "topic": "an adventure",
        "summary": "{Hero} saw {find_what} {at_place}. {He} and {friend} went to look, and they found "
        "{find_short}.",
        "feel": "{Hero} was curious and excited, and {he} went home happy.",
        "friend": True,
        "questions": (
            ("What did {hero} see?", "{Hero} saw {find_what}."),
            ("What did they find?", "They found {find_short}."),
            ("Who went with {hero}?", "{Friend} went with {hero}."),
            ("Where was {hero}?", "{Hero} was {at_place}."),
        ),
    },
    "kind": {
        "topic": "helping an animal",
        "summary": "{Hero} found {hurt_who} {at_place}, and {he} helped it.",
        "feel": "{Hero} was happy because {he} helped.",
        "friend": False,
        "questions": (
            ("What did {hero} find?", "{Hero} found {hurt_who}."),
            ("Where was {hero}?", "{Hero} was {at_place}."),
        ),
    },
    "listen": {
        "topic": "listening to your {parent}",
        "summary": '{Hero} did not listen when {his} {parent} said, "{warn_rule}" Something went wrong, '
        "so {hero} said sorry and helped make it right.",
        "feel": "{Hero} felt bad because {he} did not listen.",
        "friend": False,
        "questions": (
            ("What did {hero}'s {parent} always say?", '{Hero}\'s {parent} always said, "{warn_rule}"'),
            ("Did {hero} listen?", "No. {Hero} did not listen, and then {he} said sorry."),
        ),
    },
    "race": {
        "topic": "a race",
        "summary": "{Hero} and {friend} had a race {at_place}. {Friend} got hurt, so {hero} went back "
        "to help, and they finished the race together.",
        "feel": "{Hero} wanted to win, but {he} was happy that {he} helped {friend}.",
        "friend": True,
        "questions": (
            (
                "Who won the race?",
                "Nobody won. {Hero} went back to help {friend}, and they finished together.",
            ),
            ("Who got hurt?", "{Friend} got hurt in the race."),
            ("Where was the race?", "The race was {at_place}."),
        ),
    },
    "rain": {
        "topic": "a rainy day",
        "summary": "{Hero} wanted to go to {place}, but it was raining. {His} {parent} found a fun thing "
        "to do inside, and later a rainbow came out.",
        "feel": "{Hero} was sad about the rain at first, but then {he} had fun inside.",
        "friend": False,
        "questions": (
            ("What was the weather like?", "It was raining. Later the sun came out."),
            ("Where did {hero} want to go?", "{Hero} wanted to go to {place}."),
            ("What did {hero} see at the end?", "{Hero} saw a rainbow."),
        ),
    },
    "shy": {
        "topic": "making a new friend",
        "summary": "{Hero} was shy. {At_place}, {he} said hello to {friend}, and they became friends.",
        "feel": "{Hero} felt shy at first, but then {he} was happy to have a new friend.",
        "friend": True,
        "questions": (
            ("Who did {hero} meet?", "{Hero} met {friend}, {a_friend}."),
            ("Where did they meet?", "They met {at_place}."),
        ),
    },
    "sorry": {
        "topic": "saying sorry",
        "summary": "{Hero} and {friend} fought over {hero}'s {obj}, and it fell in the mud. They both "
        "said sorry and took turns.",
        "feel": "{Hero} was angry at first, but after they said sorry, {he} was happy again.",
        "friend": True,
        "questions": (
            ("What did they fight about?", "They both wanted to {play} {hero}'s {obj}."),
            ("What happened to the {obj}?", "It fell in the mud, and they washed it."),
            ("Where were they?", "They were {at_place}."),
        ),
    },
    "garden": {
        "topic": "a little seed",
        "summary": "{Hero}'s {grand} gave {him} a seed. {Hero} watered it every day and waited, and it "
        "grew into {plant_end}.",
        "feel": "{Hero} was sad when nothing grew at first, but then {he} was very happy.",
        "friend": False,
        "questions": (
            ("What did {hero}'s {grand} give {him}?", "{Hero}'s {grand} gave {him} a seed."),
            ("What did the seed grow into?", "It grew into {plant_end}."),
        ),
    },
    "snow": {
        "topic": "a snowman",
        "summary": "{Hero} and {friend} built a snowman in the snow. When it melted, {hero} was sad, but "
        "{he} remembered the fun they had.",
        "feel": "{Hero} was happy to play in the snow, and a little sad when the snowman melted.",
        "friend": True,
        "questions": (
            ("What did {hero} and {friend} build?", "They built a snowman."),
            ("What happened to the snowman?", "The sun came out, and the snowman melted."),
        ),
    },
    "lostway": {
        "topic": "getting lost",
        "summary": "{Hero} got lost {at_place}. {He} stayed still, and {friend} helped {him} call for "
        "{his} {parent} until {phe} found {him}.",
        "feel": "{Hero} was scared when {he} was lost, and very happy when {his} {parent} found {him}.",
        "friend": True,
        "questions": (
            ("Where did {hero} get lost?", "{Hero} got lost {at_place}."),
            ("Who helped {hero}?", "{Friend} helped {hero} call for {his} {parent}."),
            ("Who found {hero}?", "{Hero}'s {parent} found {him}."),
        ),
    },
    "chores": {
        "topic": "helping at home",
        "summary": "{Hero}'s {parent} had to {chore}. {Hero} wanted to play, but {he} helped, and then "
        "they played together.",
        "feel": "{Hero} was grumpy at first, but helping was more fun than {he} had thought.",
        "friend": False,
        "questions": (
            ("What did {hero} help with?", "{Hero} helped {his} {parent} {chore}."),
            ("Did {hero} want to help?", "Not at first. {Hero} wanted to play, but then {he} helped."),
        ),
    },
    "wish": {
        "topic": "a fairy and a wish",
        "summary": "A fairy gave {hero} one wish. {Hero} wished for {friend} to be happy, and the wish "
        "came true.",
        "feel": "{Hero} was happy because {he} made {friend} happy.",
        "friend": True,
        "questions": (
            ("What did {hero} wish for?", "{Hero} wished for {friend} to be happy."),
            ("Who gave {hero} a wish?", "A little fairy gave {hero} one wish."),
        ),
    },
    "bedtime": {
        "topic": "going to bed",
        "summary": "{Hero} could not sleep, so {his} {parent} told {him} a story. Soon {he} was fast asleep.",
        "feel": "{Hero} was not sleepy at first, but then {he} fell fast asleep.",
        "friend": False,
        "questions": (
            ("Who told {hero} a story?", "{Hero}'s {parent} told {him} a story."),
            ("Did {hero} fall asleep?", "Yes. Soon {hero} was fast asleep."),
        ),
    },
}

# Made-up hero names for told stories, so a name the corpus never used is still copied.
NAME_STARTS = ("B", "D", "G", "J", "K", "L", "M", "N", "P", "R", "S", "T", "V", "Z")
NAME_VOWELS = ("a", "e", "i", "o", "u")
NAME_SYLLABLES = ("ba", "di", "ko", "la", "mi", "no", "ra", "si", "to", "vi", "zu", "fe", "ga", "po")
NAME_ENDS = ("", "", "", "n", "x", "lo")
