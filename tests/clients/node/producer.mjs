// The article's producer, as written there but for the broker's address.
import { Kafka } from 'kafkajs'

const kafka = new Kafka({
  clientId: 'my-app',
  brokers: process.env.KAFKA_BOOTSTRAP_SERVERS.split(','),
})

const producer = kafka.producer()

await producer.connect()
await producer.send({
  topic: 'user-events',
  messages: [{ value: 'User signed up' }],
})
await producer.disconnect()
