// The hark demo chat: joins one room over Phoenix Channels, pushes
// "new_msg" {user, body} and shows the messages of everyone in the room.
//
// harkd broadcasts a client's event to the other subscribers of the topic
// but not back to the sender, so the page shows its own message itself once
// the server has replied ok to the push.
import { Socket } from '/assets/phoenix.mjs';

const elements = {
  status: document.getElementById('status'),
  roomForm: document.getElementById('room-form'),
  name: document.getElementById('name'),
  room: document.getElementById('room'),
  messages: document.getElementById('messages'),
  messageForm: document.getElementById('message-form'),
  body: document.getElementById('body'),
  send: document.getElementById('send'),
};

const socket = new Socket('/socket');
let channel = null;

// Shows the connection state as text and in data-state, which the
// stylesheet and the browser test read.
function setStatus(state, text = state) {
  elements.status.dataset.state = state;
  elements.status.textContent = text;
  elements.send.disabled = state !== 'joined';
}

function appendMessage(user, body, mine = false) {
  const item = document.createElement('li');
  if (mine) item.className = 'mine';
  const userSpan = document.createElement('span');
  userSpan.className = 'user';
  userSpan.textContent = user;
  const bodySpan = document.createElement('span');
  bodySpan.className = 'body';
  bodySpan.textContent = body;
  item.append(userSpan, bodySpan);
  elements.messages.append(item);
  elements.messages.scrollTop = elements.messages.scrollHeight;
}

function appendNotice(text) {
  const item = document.createElement('li');
  item.className = 'notice';
  item.textContent = text;
  elements.messages.append(item);
}

// Leaves the current room, if any, and joins the one in the room field.
function joinRoom() {
  const topic = elements.room.value.trim();
  if (!topic) return;
  if (channel) channel.leave();

  channel = socket.channel(topic, {});
  channel.on('new_msg', (payload) => appendMessage(String(payload.user), String(payload.body)));
  setStatus('joining', `joining ${topic}`);

  const joined = channel;
  joined.join()
    .receive('ok', () => {
      if (joined !== channel) return;
      setStatus('joined', `joined ${topic}`);
      appendNotice(`joined ${topic}`);
    })
    .receive('error', (response) => {
      if (joined === channel) setStatus('error', `join failed: ${response.reason ?? 'unknown error'}`);
    })
    .receive('timeout', () => {
      if (joined === channel) setStatus('error', 'join timed out; retrying');
    });
  joined.onError(() => {
    if (joined === channel) setStatus('error', 'connection lost; reconnecting');
  });
}

function sendMessage() {
  const user = elements.name.value.trim() || 'anonymous';
  const body = elements.body.value;
  if (!channel || body.trim() === '') return;

  channel.push('new_msg', { user, body })
    .receive('ok', () => appendMessage(user, body, true))
    .receive('error', (response) => appendNotice(`not sent: ${response.reason ?? 'error'}`))
    .receive('timeout', () => appendNotice('not sent: timed out'));
  elements.body.value = '';
  elements.body.focus();
}

elements.roomForm.addEventListener('submit', (event) => {
  event.preventDefault();
  joinRoom();
});

elements.messageForm.addEventListener('submit', (event) => {
  event.preventDefault();
  sendMessage();
});

socket.onOpen(() => {
  if (!channel) joinRoom();
});

elements.name.value = `guest-${Math.floor(Math.random() * 1000)}`;
setStatus('connecting');
socket.connect();
