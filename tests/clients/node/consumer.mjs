// The article's consumer, as written there but for the broker's address.
import { Kafka } from 'kafkajs'

const kafka = new Kafka({
  clientId: 'my-app',
  brokers: process.env.KAFKA_BOOTSTRAP_SERVERS.split(','),
})

const consumer = kafka.consumer({ groupId: 'seed-analytics' })

await consumer.connect()
await consumer.subscribe({ topic: 'user-events', fromBeginning: true })

await consumer.run({
  eachMessage: async ({ message }) => {
    console.log(message.value.toString())
  },
})
