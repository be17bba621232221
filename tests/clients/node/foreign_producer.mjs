// Another service writing to the site's events topic with kafkajs: an event of
// its own (a CloudEvent the site does not know), and a forgery of one of the
// site's events (a like of a real post), signed with a key the site never gave.
//
// Reads KAFKA_BOOTSTRAP_SERVERS, EVENTS_TOPIC and the forged like's FORGED_POST_ID,
// FORGED_POST_AUTHOR_ID, FORGED_USER_ID, FORGED_USERNAME; prints the ids it sent
// as one line of JSON once the broker acknowledged both records.
import { createHmac, randomUUID } from 'node:crypto'
import { Kafka } from 'kafkajs'

const env = process.env
const topic = env.EVENTS_TOPIC || 'user-events'
const postId = Number(env.FORGED_POST_ID)
const userId = Number(env.FORGED_USER_ID)

const order = {
  specversion: '1.0',
  id: `order-${randomUUID()}`,
  source: '/shop',
  type: 'order.placed',
  time: new Date().toISOString(),
  datacontenttype: 'application/json',
  data: { order: 17, total: '12.50' },
}

// Every attribute the site's own likes carry, claiming the site as its source.
const like = {
  specversion: '1.0',
  id: randomUUID(),
  source: '/eventsite',
  type: 'photo.liked',
  time: new Date().toISOString(),
  subject: `posts/${postId}`,
  datacontenttype: 'application/json',
  schemaversion: 1,
  actor: String(userId),
  data: {
    post_id: postId,
    post_author_id: Number(env.FORGED_POST_AUTHOR_ID),
    user_id: userId,
    username: env.FORGED_USERNAME,
    like_count: 77,
  },
}
const likeValue = JSON.stringify(like)
const guessed = createHmac('sha256', 'a key the site never gave out').update(likeValue).digest('hex')

const kafka = new Kafka({ clientId: 'shop', brokers: env.KAFKA_BOOTSTRAP_SERVERS.split(',') })
const producer = kafka.producer()
await producer.connect()
// One send per record: the embedded broker miscounts the end of a partition
// written a batch of several records at once (see test_confluent_kafka.py).
await producer.send({
  topic,
  acks: -1,
  messages: [{ key: 'order-17', value: JSON.stringify(order), headers: { origin: 'shop' } }],
})
await producer.send({
  topic,
  acks: -1,
  messages: [
    {
      key: String(userId),
      value: likeValue,
      headers: { 'eventsite-signature': `v1=forger:${guessed}` },
    },
  ],
})
await producer.disconnect()
console.log(JSON.stringify({ order: order.id, like: like.id }))
