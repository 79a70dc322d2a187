// Vietnamese by default, English on request; the choice is remembered in this browser.
'use strict';

const lienthongI18n = (() => {
  const texts = {
    vi: {
      'rooms.heading': 'Phòng họp trực tuyến',
      'rooms.intro': 'Chọn phòng họp để tham gia.',
      'rooms.empty': 'Chưa có phòng họp nào được cấu hình.',
      'rooms.error': 'Không tải được danh sách phòng.',
      'rooms.count': '{count} người đang họp',
      'rooms.locked': 'đã khoá',
      'join.heading': 'Tham gia phòng họp',
      'join.name': 'Họ và tên',
      'join.site': 'Đơn vị / điểm cầu',
      'join.pin': 'Mã PIN',
      'join.submit': 'Vào phòng',
      'join.joining': 'Đang vào phòng…',
      'join.back': '← Danh sách phòng',
      'refused.unknown_room': 'Phòng họp này không tồn tại.',
      'refused.wrong_pin': 'Mã PIN không đúng.',
      'refused.unknown_site': 'Đơn vị không có trong danh sách của phòng.',
      'refused.full': 'Phòng họp đã đủ người.',
      'refused.locked': 'Chủ trì đã khoá phòng họp.',
      'refused.not_chair': 'Chỉ chủ trì mới có quyền này.',
      'refused.unknown_participant': 'Người này không còn trong phòng.',
      'refused.not_joined': 'Bạn chưa vào phòng.',
      'refused.already_joined': 'Bạn đã ở trong phòng.',
      'refused.too_many_attempts': 'Nhập sai mã PIN quá nhiều lần. Vui lòng thử lại sau 10 phút.',
      'refused.other': 'Máy chủ từ chối yêu cầu.',
      'ended.removed': 'Chủ trì đã mời bạn ra khỏi phòng.',
      'ended.room_closed': 'Phòng họp đã bị đóng.',
      'ended.shutdown': 'Máy chủ đang khởi động lại…',
      'ended.left': 'Bạn đã rời phòng họp.',
      'ended.rejoin': 'Vào lại',
      'media.denied': 'Không dùng được camera hoặc micro; bạn vẫn xem và nghe được.',
      'controls.mic_on': 'Tắt micro',
      'controls.mic_off': 'Bật micro',
      'controls.camera_on': 'Tắt camera',
      'controls.camera_off': 'Bật camera',
      'controls.screen_start': 'Chia sẻ màn hình',
      'controls.screen_stop': 'Dừng chia sẻ',
      'controls.devices': 'Thiết bị',
      'controls.leave': 'Rời phòng',
      'controls.lock': 'Khoá phòng',
      'controls.unlock': 'Mở khoá phòng',
      'controls.microphone': 'Micro',
      'controls.camera': 'Camera',
      'chair.mute': 'Tắt mic',
      'chair.stop_camera': 'Tắt camera',
      'chair.remove': 'Mời ra',
      'chair.spotlight': 'Trao lời',
      'chair.unspotlight': 'Thôi trao lời',
      'chair.confirm_remove': 'Mời {name} ra khỏi phòng?',
      'tile.you': '(bạn)',
      'tile.chair': 'Chủ trì',
      'tile.microphone_off': 'mic tắt',
      'tile.camera_off': 'camera tắt',
      'names.heading': '{count} điểm cầu khác (không hiện hình)',
      'names.page': 'Trang {page}/{pages}',
      'names.previous': '‹ Trang trước',
      'names.next': 'Trang sau ›',
      'path.udp': 'UDP trực tiếp',
      'path.tcp': 'TCP trực tiếp',
      'path.turn-udp': 'chuyển tiếp UDP',
      'path.turn-tcp': 'chuyển tiếp TCP',
      'path.turn-tls': 'chuyển tiếp TLS',
      'tile.screen': 'Màn hình của {name}',
      'status.reconnecting': 'Mất kết nối mạng. Đang kết nối lại…',
      'status.page_retry': 'Chưa kết nối được máy chủ. Đang thử lại…',
      'status.reconnected': 'Đã kết nối lại.',
      'status.locked': 'Phòng đang khoá',
      'status.audio_only': 'Đường truyền quá yếu để nhận hình: tạm thời chỉ nhận âm thanh. Hình sẽ tự trở lại khi đường truyền tốt hơn.',
      'status.video_back': 'Đường truyền đã tốt hơn: hình ảnh đã trở lại.',
      'connection.good': 'Kết nối tốt',
      'connection.fair': 'Kết nối trung bình',
      'connection.poor': 'Kết nối kém',
      'connection.unknown': 'Đang đo kết nối',
      'forced.microphone': 'Chủ trì đã tắt micro của bạn.',
      'forced.camera': 'Chủ trì đã tắt camera của bạn.',
      'language.switch': 'English',
    },
    en: {
      'rooms.heading': 'Online meeting rooms',
      'rooms.intro': 'Choose a room to join.',
      'rooms.empty': 'No rooms are configured yet.',
      'rooms.error': 'Could not load the room list.',
      'rooms.count': '{count} in the meeting',
      'rooms.locked': 'locked',
      'join.heading': 'Join the meeting',
      'join.name': 'Your name',
      'join.site': 'Site',
      'join.pin': 'PIN',
      'join.submit': 'Join',
      'join.joining': 'Joining…',
      'join.back': '← All rooms',
      'refused.unknown_room': 'This room does not exist.',
      'refused.wrong_pin': 'Wrong PIN.',
      'refused.unknown_site': 'This site is not in the room\'s list.',
      'refused.full': 'The room is full.',
      'refused.locked': 'The chair has locked the room.',
      'refused.not_chair': 'Only the chair can do this.',
      'refused.unknown_participant': 'This participant has left.',
      'refused.not_joined': 'You have not joined yet.',
      'refused.already_joined': 'You are already in the room.',
      'refused.too_many_attempts': 'Too many wrong PINs. Please try again in 10 minutes.',
      'refused.other': 'The server refused the request.',
      'ended.removed': 'The chair removed you from the room.',
      'ended.room_closed': 'The meeting room was closed.',
      'ended.shutdown': 'The server is restarting…',
      'ended.left': 'You left the meeting.',
      'ended.rejoin': 'Join again',
      'media.denied': 'Camera or microphone unavailable; you can still watch and listen.',
      'controls.mic_on': 'Mute',
      'controls.mic_off': 'Unmute',
      'controls.camera_on': 'Stop camera',
      'controls.camera_off': 'Start camera',
      'controls.screen_start': 'Share screen',
      'controls.screen_stop': 'Stop sharing',
      'controls.devices': 'Devices',
      'controls.leave': 'Leave',
      'controls.lock': 'Lock room',
      'controls.unlock': 'Unlock room',
      'controls.microphone': 'Microphone',
      'controls.camera': 'Camera',
      'chair.mute': 'Mute',
      'chair.stop_camera': 'Stop camera',
      'chair.remove': 'Remove',
      'chair.spotlight': 'Give floor',
      'chair.unspotlight': 'End floor',
      'chair.confirm_remove': 'Remove {name} from the room?',
      'tile.you': '(you)',
      'tile.chair': 'Chair',
      'tile.microphone_off': 'muted',
      'tile.camera_off': 'camera off',
      'names.heading': '{count} other sites (no video)',
      'names.page': 'Page {page} of {pages}',
      'names.previous': '‹ Previous',
      'names.next': 'Next ›',
      'path.udp': 'direct UDP',
      'path.tcp': 'direct TCP',
      'path.turn-udp': 'relayed, UDP',
      'path.turn-tcp': 'relayed, TCP',
      'path.turn-tls': 'relayed, TLS',
      'tile.screen': '{name}\'s screen',
      'status.reconnecting': 'Network lost. Reconnecting…',
      'status.page_retry': 'Cannot reach the server yet. Retrying…',
      'status.reconnected': 'Reconnected.',
      'status.locked': 'Room locked',
      'status.audio_only': 'The connection is too weak for video: receiving audio only for now. Video comes back by itself when the connection improves.',
      'status.video_back': 'The connection improved: video is back.',
      'connection.good': 'Good connection',
      'connection.fair': 'Fair connection',
      'connection.poor': 'Poor connection',
      'connection.unknown': 'Measuring the connection',
      'forced.microphone': 'The chair muted your microphone.',
      'forced.camera': 'The chair stopped your camera.',
      'language.switch': 'Tiếng Việt',
    },
  };
  let language = localStorage.getItem('lienthong.language') === 'en' ? 'en' : 'vi';
  const listeners = [];

  function t(key, values) {
    let text = (texts[language] && texts[language][key]) || texts.vi[key] || key;
    for (const [name, value] of Object.entries(values || {})) {
      text = text.replace('{' + name + '}', String(value));
    }
    return text;
  }

  function apply() {
    document.documentElement.lang = language;
    for (const element of document.querySelectorAll('[data-i18n]')) {
      element.textContent = t(element.dataset.i18n);
    }
    const button = document.getElementById('language');
    if (button) button.textContent = t('language.switch');
  }

  function toggle() {
    language = language === 'vi' ? 'en' : 'vi';
    localStorage.setItem('lienthong.language', language);
    apply();
    for (const listener of listeners) listener();
  }

  document.addEventListener('DOMContentLoaded', () => {
    const button = document.getElementById('language');
    if (button) button.addEventListener('click', toggle);
  });
  if (document.readyState !== 'loading') {
    const button = document.getElementById('language');
    if (button) button.addEventListener('click', toggle);
  }

  return { t, apply, onChange: (listener) => listeners.push(listener), language: () => language };
})();
