// The room list at "/".
'use strict';

async function showRooms() {
  const list = document.getElementById('rooms');
  try {
    const response = await fetch('/api/rooms', { cache: 'no-store' });
    if (!response.ok) throw new Error(String(response.status));
    const rooms = await response.json();
    list.replaceChildren();
    document.getElementById('rooms-empty').hidden = rooms.length > 0;
    for (const room of rooms) {
      const item = document.createElement('li');
      const link = document.createElement('a');
      link.href = '/r/' + encodeURIComponent(room.name);
      link.textContent = room.title;
      const details = document.createElement('span');
      details.className = 'room-details';
      details.textContent = lienthongI18n.t('rooms.count', { count: room.participants })
        + (room.locked ? ' · ' + lienthongI18n.t('rooms.locked') : '');
      item.append(link, details);
      list.append(item);
    }
  } catch (error) {
    document.getElementById('rooms-error').hidden = false;
  }
}

lienthongI18n.onChange(showRooms);
lienthongI18n.apply();
showRooms();
setInterval(showRooms, 10000);
